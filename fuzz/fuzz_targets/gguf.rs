//! A GGUF file through what `ModelSource::open` and a load do with it: the container, the
//! config from its metadata, the embedded tokenizer, and the tensors dequantised under HF
//! names (each shape checked against the config first).
#![no_main]

mod common;

use clex_models::gguf::{self, GgufFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("model.gguf", data);
    let Ok(g) = GgufFile::open(&path) else { return };
    if gguf::config(&g).is_ok() {
        let _ = gguf::checkpoint(&g);
    }
    let _ = gguf::tokenizer(&g);
});
