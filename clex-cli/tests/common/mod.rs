//! Running the `clex` binary from the CLI tests, and the test helpers clex-models' tests
//! share with them (the SmolLM2 GGUF lookup, −log softmax).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use tokenizers::TokenizerBuilder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

#[path = "../../../clex-models/tests/gguf_files/mod.rs"]
pub mod gguf_files;

/// Runs `clex` with `args`: (exit code, stdout, stderr).
pub fn clex(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clex")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A path as a command-line argument.
pub fn p(d: &Path) -> &str {
    d.to_str().unwrap()
}

/// A file of the official CLEX code's fixtures (clex-models/tests/fixtures/clex).
pub fn clex_fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/clex").join(name)
}

/// A model directory: the CLEX-LLaMA fixture weights (`llama_clex`), its config, and a byte
/// tokenizer of `vocab` ids ([`write_byte_tokenizer`]).
pub fn byte_model_dir(vocab: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(clex_fixture("llama_clex.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(clex_fixture("llama_clex.safetensors"), dir.path().join("model.safetensors")).unwrap();
    write_byte_tokenizer(dir.path(), vocab);
    dir
}

/// `dir/tokenizer.json`: byte-level BPE without merges, one id per byte (the sorted GPT-2
/// byte alphabet; the first `vocab` of them), plus `<extra_N>` ids up to `vocab`.
pub fn write_byte_tokenizer(dir: &Path, vocab: usize) {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut vocab_map: std::collections::HashMap<String, u32> =
        alphabet.iter().take(vocab.min(256)).enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    for extra in 256..vocab {
        vocab_map.insert(format!("<extra_{extra}>"), extra as u32);
    }
    let bpe = BPE::builder().vocab_and_merges(vocab_map.into_iter().collect::<tokenizers::models::bpe::Vocab>(), vec![]).build().unwrap();
    let tok = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
        .with_model(bpe)
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::new(false, true, true)))
        .build()
        .unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}
