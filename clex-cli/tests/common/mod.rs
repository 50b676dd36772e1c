//! Running the `clex` binary from the CLI tests, and the test helpers clex-models' tests
//! share with them (the SmolLM2 GGUF lookup, −log softmax).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
