//! A safetensors file (header and data) through `Weights::open` and every tensor's decode:
//! any input must give `Ok` or `Err`, never a panic, an abort or an allocation sized by the
//! input.
#![no_main]

mod common;

use clex_models::weights::Weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::input_file("model.safetensors", data);
    if let Ok(w) = Weights::open(std::slice::from_ref(&path)) {
        for name in w.names() {
            let _ = w.read_f32(&name);
        }
    }
});
