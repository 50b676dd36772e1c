//! The `clex` binary on GGUF files: one-line errors with exit code 2 for bad input, and,
//! when the SmolLM2 GGUF is there (`cargo xtask fetch-smollm2`), `-m file.gguf` and the
//! directory `clex convert` writes give the same greedy continuation.

mod common;

use common::{clex, p};
use std::path::PathBuf;

#[test]
fn bad_gguf_input_is_a_one_line_error_with_exit_code_two() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGML\x03\x00\x00\x00 not a model").unwrap();
    for args in [
        vec!["generate", "-m", p(&junk), "-p", "x"],
        vec!["inspect", "-m", p(&junk)],
        vec!["score", "-m", p(&junk), "--ids", "1,2"],
        vec!["convert", "--gguf", p(&junk), "--out", p(dir.path())],
    ] {
        let (code, _, err) = clex(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("junk.gguf") && err.contains("not a GGUF file") && err.lines().count() == 1, "{args:?}: {err}");
    }
    let (code, _, err) = clex(&["convert", "--gguf", "/nonexistent/x.gguf", "--out", p(dir.path())]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.gguf"), "{err}");
    let (code, _, err) = clex(&["generate", "-m", "/nonexistent/x.gguf"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.gguf") && err.contains(".gguf file not found"), "{err}");
}

/// `$CLEX_SMOLLM2_GGUF`, else the cache `cargo xtask fetch-smollm2` fills.
fn smollm2() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let path = env("CLEX_SMOLLM2_GGUF").or_else(|| {
        let cache = env("CLEX_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("clex-rs")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/clex-rs")))?;
        Some(cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    });
    match path {
        Some(p) if p.is_file() => Some(p),
        other => {
            eprintln!("skipping: SmolLM2 GGUF not found at {other:?}; run `cargo xtask fetch-smollm2`");
            None
        }
    }
}

#[test]
fn smollm2_gguf_and_its_conversion_generate_the_same() {
    let Some(gguf) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let (code, stdout, err) = clex(&["convert", "--gguf", p(&gguf), "--out", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("tokenizer.json"), "{stdout}");
    let (code, _, err) = clex(&["convert", "--gguf", p(&gguf), "--out", p(&out)]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    let prompt = "The capital of France is";
    let mut texts = Vec::new();
    for m in [&gguf, &out] {
        let (code, text, err) = clex(&["generate", "-m", p(m), "-p", prompt, "-n", "4", "--temperature", "0"]);
        assert_eq!(code, 0, "{err}");
        eprintln!("{}: {text:?}", m.display());
        assert!(text.starts_with("The capital of France is Paris"), "{text:?}");
        texts.push(text);
    }
    assert_eq!(texts[0], texts[1]);
}
