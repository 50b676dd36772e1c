//! A tokenizer.json through the loader programs use (`load_tokenizer`, which checks the
//! JSON before the tokenizers crate sees it) and an encode and decode.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("tokenizer.json", data);
    if let Ok(tok) = clex_models::load_tokenizer(&path)
        && let Ok(enc) = tok.encode("Hostile inputs, politely refused.", true)
    {
        let _ = tok.decode(enc.get_ids(), false);
    }
});
