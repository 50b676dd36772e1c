//! `clex` on the official CLEX code's tiny CLEX-Phi-2 and CLEX-Mixtral (clex-models'
//! `fixtures/clex_arch`): `score` reproduces the goldens in a full forward (N = 100, t = 4)
//! and through the KV cache (`--prefill 30`, 40 steps across t = 1 → 2 → 3) under both cache
//! policies; `generate`, `perplexity`, `passkey`, `inspect` and `convert` (the GGUF
//! fixtures of `fixtures/gguf_arch`) run on both.

mod common;

use std::path::{Path, PathBuf};

use clex_models::weights::Weights;
use common::{clex, p};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures").join(name)
}

/// An HF directory of the `arch` fixture, with a byte-level tokenizer of its 256 ids.
fn model_dir(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(&format!("clex_arch/{arch}_clex.json")), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixture(&format!("clex_arch/{arch}_clex.safetensors")), dir.path().join("model.safetensors")).unwrap();
    common::write_byte_tokenizer(dir.path(), 256);
    dir
}

fn read(path: &Path, name: &str) -> Vec<f32> {
    Weights::open(&[path.to_path_buf()]).unwrap().read_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

fn ids_of(v: &[f32]) -> String {
    v.iter().map(|x| (*x as u32).to_string()).collect::<Vec<_>>().join(",")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}

/// Manifest tolerance (2e-3) on every logit; measured worst ~1e-5.
const TOL: f32 = 2e-3;

#[test]
fn score_reproduces_the_goldens_full_and_cached() {
    let golden = fixture("clex_arch/arch_logits.safetensors");
    for arch in ["phi2", "mixtral"] {
        let dir = model_dir(arch);
        let out = dir.path().join("logits.safetensors");
        let ids = read(&golden, "inputs/ids");
        let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", &ids_of(&ids[..100]), "--out", p(&out)]);
        assert_eq!(code, 0, "{err}");
        let worst = max_abs_diff(&read(&out, "logits"), &read(&golden, &format!("{arch}/L100/logits")));
        eprintln!("{arch}: score vs golden L100 {worst:.2e}");
        assert!(worst < TOL, "{arch} score L100: {worst}");
        let decode = read(&golden, &format!("{arch}/decode/input_ids"));
        let prefill = read(&golden, &format!("{arch}/decode/prefill_logits"));
        for (policy, key) in [("reference", "step_logits"), ("recompute", "full_recompute_last_logits")] {
            let args =
                ["score", "-m", p(dir.path()), "--ids", &ids_of(&decode), "--prefill", "30", "--cache-policy", policy, "--out", p(&out)];
            let (code, _, err) = clex(&args);
            assert_eq!(code, 0, "{err}");
            let got = read(&out, "logits");
            let want: Vec<f32> = prefill.iter().chain(&read(&golden, &format!("{arch}/decode/{key}"))).copied().collect();
            let worst = max_abs_diff(&got, &want);
            eprintln!("{arch}: score --prefill 30 --cache-policy {policy} vs golden {worst:.2e}");
            assert!(worst < TOL, "{arch} score --prefill 30 ({policy}): {worst}");
        }
    }
}

#[test]
fn inspect_and_convert_run() {
    for arch in ["phi2", "mixtral"] {
        let dir = model_dir(arch);
        let (code, stdout, err) = clex(&["inspect", "-m", p(dir.path())]);
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains(if arch == "phi2" { "phi" } else { "mixtral" }), "{arch} inspect:\n{stdout}");
        let out = tempfile::tempdir().unwrap();
        let gguf = fixture(&format!("gguf_arch/{arch}.gguf"));
        let hf = out.path().join("hf");
        let (code, _, err) = clex(&["convert", "--gguf", p(&gguf), "--out", p(&hf)]);
        assert_eq!(code, 0, "{arch} convert: {err}");
        assert!(out.path().join("hf/model.safetensors").is_file());
    }
}

/// The text subcommands run through both architectures (numbers: `score` above).
#[test]
fn generate_perplexity_and_passkey_run() {
    for arch in ["phi2", "mixtral"] {
        let dir = model_dir(arch);
        let (code, stdout, err) = clex(&["generate", "-m", p(dir.path()), "-p", "ROMEO:", "-n", "40", "--bos", "false"]);
        assert_eq!(code, 0, "{arch} generate: {err}");
        assert!(!stdout.is_empty(), "{arch} generate printed nothing");
        let data = dir.path().join("doc.txt");
        std::fs::write(&data, "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings").unwrap();
        let args = ["perplexity", "-m", p(dir.path()), "--data", p(&data), "--lengths", "32,64", "--bos", "false"];
        let (code, stdout, err) = clex(&args);
        assert_eq!(code, 0, "{arch} perplexity: {err}");
        assert!(stdout.contains("64"), "{arch} perplexity:\n{stdout}");
        let (code, stdout, err) = clex(&["passkey", "-m", p(dir.path()), "--lengths", "160", "--depths", "0.5", "--trials", "1"]);
        assert_eq!(code, 0, "{arch} passkey: {err}");
        assert!(stdout.contains("accuracy"), "{arch} passkey:\n{stdout}");
    }
}
