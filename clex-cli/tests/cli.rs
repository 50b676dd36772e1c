//! The `clex` binary end to end (generate, inspect, score, perplexity, passkey) on the tiny CLEX-LLaMA fixture (byte-level vocabulary of 256)
//! with a byte-level tokenizer made for it: deterministic greedy output, streaming of the
//! prompt, and one-line errors with exit code 2.

mod common;

use common::{clex, p};
use std::path::PathBuf;

use tokenizers::TokenizerBuilder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/clex").join(name)
}

/// A model directory: the fixture weights, its config, and a 256-entry byte tokenizer.
fn model_dir(vocab: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("llama_clex.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixture("llama_clex.safetensors"), dir.path().join("model.safetensors")).unwrap();
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
    tok.save(dir.path().join("tokenizer.json"), false).unwrap();
    dir
}

#[test]
fn greedy_generation_is_deterministic_and_streams() {
    let dir = model_dir(256);
    // 30 prompt bytes + 40 tokens crosses P = 32 and 64: t goes 1 → 2 → 3 during decoding.
    let args = ["generate", "-m", p(dir.path()), "-p", "To be, or not to be, that is t", "-n", "40", "--temperature", "0"];
    let (code, out, err) = clex(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("To be, or not to be, that is t"), "{out}");
    assert!(out.len() > 35, "{out:?}");
    assert!(err.contains("tokens/s"), "{err}");
    let (_, again, _) = clex(&args);
    assert_eq!(out, again, "temperature 0 is deterministic");
    let (code, sampled, err) = clex(&["generate", "-m", p(dir.path()), "-p", "To be", "-n", "20", "--seed", "3", "--top-k", "5"]);
    assert_eq!(code, 0, "{err}");
    let (_, sampled2, _) = clex(&["generate", "-m", p(dir.path()), "-p", "To be", "-n", "20", "--seed", "3", "--top-k", "5"]);
    assert_eq!(sampled, sampled2, "seeded sampling is reproducible");
}

#[test]
fn user_errors_are_one_line_with_exit_code_two() {
    let dir = model_dir(256);
    let (code, _, err) = clex(&["generate", "-m", "/nonexistent/model", "-p", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/model") && !err.contains("panicked") && !err.contains("backtrace"), "{err}");
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "--dtype", "f64"]);
    assert_eq!(code, 2);
    assert!(err.contains("--dtype f64") && err.contains("bf16"), "{err}");
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "--rope-scaling", "yarn"]);
    assert_eq!(code, 2);
    assert!(err.contains("CLEX model"), "{err}");
    let big = model_dir(300);
    let (code, _, err) = clex(&["generate", "-m", p(big.path()), "-p", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("tokenizer has 300 entries") && err.contains("vocab_size is 256"), "{err}");
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "-p", &"a".repeat(300), "--max-seq-len", "100"]);
    assert_eq!(code, 2);
    assert!(err.contains("prompt has") && err.contains("100"), "{err}");
    // Malformed config and unknown rope kind, through every loading subcommand.
    let bad = model_dir(256);
    std::fs::write(bad.path().join("config.json"), "{\"model_type\": \"llama\",").unwrap();
    for cmd in [
        &["generate", "-m", p(bad.path()), "-p", "x"][..],
        &["inspect", "-m", p(bad.path())],
        &["score", "-m", p(bad.path()), "--ids", "1,2"],
    ] {
        let (code, _, err) = clex(cmd);
        assert_eq!(code, 2, "{cmd:?}");
        assert!(err.contains("config.json") && err.contains("invalid JSON") && err.lines().count() == 1, "{err}");
    }
    let cfg = std::fs::read_to_string(fixture("llama_clex.json")).unwrap().replace("\"clex\"", "\"ntk-by-parts\"");
    std::fs::write(bad.path().join("config.json"), cfg).unwrap();
    let (code, _, err) = clex(&["inspect", "-m", p(bad.path())]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown RoPE kind `ntk-by-parts`") && err.contains("clex"), "{err}");
    // A prompt whose attention would not fit in memory is refused before allocating.
    let long = dir.path().join("long.txt");
    std::fs::write(&long, "a".repeat(2_000_000)).unwrap();
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "--prompt-file", p(&long), "--max-seq-len", "100000000", "-n", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs about") && err.contains("GiB") && err.contains("available"), "{err}");
}

#[test]
fn inspect_shows_the_learned_theta_table() {
    let dir = model_dir(256);
    let (code, out, err) = clex(&["inspect", "-m", p(dir.path()), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rope"]["kind"], "clex");
    assert_eq!(v["parameters"], 123968);
    let theta = v["theta"].as_array().unwrap();
    assert_eq!(theta.len(), 8);
    assert_eq!(theta[0].as_array().unwrap().len(), 8);
    // Row t = 1 is the stored inv_freq; later rows follow the ODE (golden values in clex-core).
    assert_eq!(theta[0][0].as_f64().unwrap(), 1.0);
    let (code, text, _) = clex(&["inspect", "-m", p(dir.path())]);
    assert_eq!(code, 0);
    assert!(text.contains("CLEX θ(t) for t = 1..8") && text.contains("parameters: 123968"), "{text}");
    let (code, _, err) = clex(&["inspect", "-m", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
}

/// `clex score` reproduces the official CLEX code's logits (full forward at N = 100, t = 4)
/// and its cached decode across t boundaries (prefill 30, then 40 single steps).
#[test]
fn score_reproduces_golden_logits() {
    let dir = model_dir(256);
    let g = clex_models::weights::Checkpoint::open(&[fixture("logits.safetensors")]).unwrap();
    let read = |name: &str| g.read_f32(name).unwrap().0;
    let ids_of = |v: &[f32]| v.iter().map(|x| (*x as u32).to_string()).collect::<Vec<_>>().join(",");
    let out = dir.path().join("logits.safetensors");
    let (code, stdout, err) = clex(&["score", "-m", p(dir.path()), "--ids", &ids_of(&read("inputs/ids")[..100]), "--out", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("100 tokens, mean NLL"), "{stdout}");
    let got = clex_models::weights::Checkpoint::open(std::slice::from_ref(&out)).unwrap().read_f32("logits").unwrap();
    assert_eq!(got.1, vec![1, 100, 256]);
    let worst = got.0.iter().zip(read("llama/L100/logits")).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "score vs golden L100: {worst}");

    let decode = read("llama/decode/input_ids");
    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", &ids_of(&decode), "--prefill", "30", "--out", p(&out)]);
    assert_eq!(code, 0, "{err}");
    let got = clex_models::weights::Checkpoint::open(&[out]).unwrap().read_f32("logits").unwrap().0;
    let steps = read("llama/decode/step_logits");
    let worst = got[30 * 256..].iter().zip(&steps).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "score --prefill 30 vs golden step logits: {worst}");

    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", "1,2,999"]);
    assert_eq!(code, 2);
    assert!(err.contains("999") && err.contains("256"), "{err}");
    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", "1,x"]);
    assert_eq!(code, 2);
    assert!(err.contains("`x`"), "{err}");
}

/// `clex perplexity` (chunks protocol) equals the NLL that `clex score` gives on the same
/// windows, and kv-chunks with one chunk per window equals chunks.
#[test]
fn perplexity_agrees_with_score_on_the_same_windows() {
    let dir = model_dir(256);
    let text =
        "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune";
    let data = dir.path().join("doc.txt");
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("ppl.json");
    let (code, stdout, err) =
        clex(&["perplexity", "-m", p(dir.path()), "--data", p(&data), "--lengths", "64", "--bos", "false", "--json", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("protocol chunks"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &v["models"][0]["results"][0];
    assert_eq!((r["length"].as_u64(), r["windows"].as_u64(), r["tokens"].as_u64()), (Some(64), Some(2), Some(126)));

    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    let mut total = 0.0;
    for w in ids.chunks_exact(64) {
        let j = dir.path().join("score.json");
        let list = w.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
        let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", &list, "--json", p(&j)]);
        assert_eq!(code, 0, "{err}");
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        total += s["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum::<f64>();
    }
    let mean = total / 126.0;
    assert!((r["mean_nll"].as_f64().unwrap() - mean).abs() < 1e-6, "{} vs {mean}", r["mean_nll"]);

    let (code, _, err) = clex(&[
        "perplexity",
        "-m",
        p(dir.path()),
        "--data",
        p(&data),
        "--lengths",
        "64",
        "--bos",
        "false",
        "--protocol",
        "kv-chunks",
        "--chunk",
        "64",
        "--json",
        p(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let kv: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!((kv["models"][0]["results"][0]["mean_nll"].as_f64().unwrap() - mean).abs() < 1e-6);
    // Two models in one run and one plot.
    let plot = dir.path().join("ppl.svg");
    let (code, stdout, err) = clex(&[
        "perplexity",
        "-m",
        p(dir.path()),
        "-m",
        p(dir.path()),
        "--data",
        p(&data),
        "--lengths",
        "32,64",
        "--bos",
        "false",
        "--plot",
        p(&plot),
        "--json",
        p(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.matches("protocol chunks").count(), 2);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2, "one line per model");
    let (code, _, err) = clex(&["perplexity", "-m", p(dir.path()), "--data", p(&data), "--protocol", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("--protocol nope"), "{err}");
}

/// `clex passkey` runs its grid, reports every cell, is reproducible from the seed, and
/// refuses lengths too short for the key and question.
#[test]
fn passkey_grid_is_reported_and_reproducible() {
    let dir = model_dir(256);
    let out = dir.path().join("pk.json");
    let args = ["passkey", "-m", p(dir.path()), "--lengths", "160,256", "--depths", "0,1", "--trials", "2", "--json", p(&out)];
    let (code, stdout, err) = clex(&args);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("accuracy"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let cells = v["results"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert!(cells.iter().all(|c| c["trials"] == 2 && (0.0..=1.0).contains(&c["accuracy"].as_f64().unwrap())));
    let (_, again, _) = clex(&args);
    assert_eq!(stdout, again);
    let (code, _, err) = clex(&["passkey", "-m", p(dir.path()), "--lengths", "20"]);
    assert_eq!(code, 2);
    assert!(err.contains("--lengths 20") && err.contains("too short"), "{err}");
}
