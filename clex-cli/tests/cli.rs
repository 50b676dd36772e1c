//! The `clex` binary end to end (generate, inspect, score, perplexity, passkey, rope) on the
//! tiny fixture models: the CLEX-LLaMA of the official CLEX code and the transformers
//! LLaMA / GPT-NeoX (byte-level vocabulary of 256), checked against their goldens or against
//! `clex score` where the golden cannot say (generation, evaluation protocols); plus one-line
//! errors with exit code 2.

mod common;

use common::gguf_files::nll;
use common::{clex, p};
use std::path::{Path, PathBuf};

use clex_models::weights::Weights;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/clex").join(name)
}

/// A model directory: the fixture weights, its config, and a 256-entry byte tokenizer.
fn model_dir(vocab: usize) -> tempfile::TempDir {
    common::byte_model_dir(vocab)
}

/// The transformers fixtures (`hf/`) and clex-core's rope and CLEX-layer fixtures.
fn hf_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/hf").join(name)
}

fn core_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-core/tests/fixtures").join(name)
}

/// A golden safetensors file.
fn golden(path: &Path) -> Weights {
    Weights::open(&[path.to_path_buf()]).unwrap()
}

/// A tensor of a golden file as f32 (token ids included: they are small integers).
fn read(g: &Weights, name: &str) -> Vec<f32> {
    g.read_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

/// A model directory whose tokenizer maps token id `i` to the word `t{i}` (WordLevel on
/// whitespace, no decoder, so decoding joins the words with spaces): prompts can then be
/// given as exact token ids and `clex generate`'s output read back as ids, which a byte
/// tokenizer cannot do once the model emits bytes that are not valid UTF-8.
fn id_model_dir(config: &Path, weights: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(config, dir.path().join("config.json")).unwrap();
    std::fs::copy(weights, dir.path().join("model.safetensors")).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..256).map(|i| (format!("t{i}"), i.into())).collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

/// Token ids as text for [`id_model_dir`]'s tokenizer.
fn id_text(ids: &[u32]) -> String {
    ids.iter().map(|t| format!("t{t}")).collect::<Vec<_>>().join(" ")
}

/// Token ids back from [`id_model_dir`] text.
fn parse_ids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|w| w.strip_prefix('t').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a token: {w:?}")))
        .collect()
}

fn as_ids(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| *x as u32).collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

/// The gap between the two largest values of a row: how far an argmax is from a tie.
fn top_gap(row: &[f32]) -> f32 {
    let mut v = row.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    v[0] - v[1]
}

/// The larger of two errors, NaN if either is: `f64::max` drops a NaN, which would let a
/// NaN output pass a `worst < tol` check.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// The largest |a − b| over two slices (NaN if any entry is NaN), in f64.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, nan_max)
}

/// Runs `clex score` of `ids` (optionally `--prefill N`), writing to `out` with `out_flag`
/// (`--out` or `--json`).
fn score(dir: &Path, ids: &[u32], prefill: Option<usize>, out_flag: &str, out: &Path) {
    let list = ids.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let pre = prefill.map(|n| n.to_string());
    let mut args = vec!["score", "-m", p(dir), "--ids", &list, out_flag, p(out)];
    if let Some(n) = &pre {
        args.extend(["--prefill", n]);
    }
    let (code, _, err) = clex(&args);
    assert_eq!(code, 0, "{err}");
}

/// `clex score` of `ids` (optionally `--prefill N`): its logits, `[n · vocab]`.
fn score_logits(dir: &Path, ids: &[u32], prefill: Option<usize>) -> Vec<f32> {
    let out = dir.join("score_logits.safetensors");
    score(dir, ids, prefill, "--out", &out);
    read(&golden(&out), "logits")
}

/// `clex score --json`'s per-token NLL of `ids` (optionally `--prefill N`): entry i is the
/// NLL of `ids[i + 1]`.
fn score_nll(dir: &Path, ids: &[u32], prefill: Option<usize>) -> Vec<f64> {
    let j = dir.join("score_nll.json");
    score(dir, ids, prefill, "--json", &j);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    s["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// `clex perplexity` of `ids` (as text for [`id_model_dir`]'s tokenizer, no BOS) with extra
/// flags; returns the first result row of the JSON report.
fn perplexity(dir: &Path, ids: &[u32], extra: &[&str]) -> serde_json::Value {
    let data = dir.join("doc.txt");
    std::fs::write(&data, id_text(ids)).unwrap();
    let out = dir.join("ppl.json");
    let mut args = vec!["perplexity", "-m", p(dir), "--data", p(&data), "--bos", "false", "--json", p(&out)];
    args.extend(extra);
    let (code, _, err) = clex(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    v["models"][0]["results"][0].clone()
}

/// `clex generate` on the CLEX fixture from the official decode golden's 30-token prompt,
/// across t = 1 → 2 → 3: the tokens it prints are read back as ids and checked against
/// `clex score --prefill 30` of the same sequence (the KV-cache path that
/// `score_reproduces_golden_logits` holds to the official step logits), so a generator that
/// samples from the wrong row, feeds the wrong token back or skips the cache fails here.
/// The first token is also the argmax of the official prefill logits.
#[test]
fn generated_tokens_are_the_argmax_continuation() {
    let dir = id_model_dir(&fixture("llama_clex.json"), &fixture("llama_clex.safetensors"));
    let g = golden(&fixture("logits.safetensors"));
    let prompt_ids = &as_ids(&read(&g, "llama/decode/input_ids"))[..30];
    // The trailing space separates the echoed prompt from the first generated word.
    let prompt = format!("{} ", id_text(prompt_ids));
    let generate = |extra: &[&str]| -> (String, Vec<u32>) {
        let mut args = vec!["generate", "-m", p(dir.path()), "-p", &prompt, "-n", "40", "--bos", "false"];
        args.extend(extra);
        let (code, out, err) = clex(&args);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with(&prompt), "the prompt is echoed first: {out:?}");
        assert!(err.contains("tokens/s"), "{err}");
        let ids = parse_ids(&out);
        assert_eq!(&ids[..30], prompt_ids);
        (out, ids)
    };
    let greedy_args = ["--temperature", "0", "--repeat-penalty", "1"];
    let (out, ids) = generate(&greedy_args);
    // Stopping early is only right on EOS (id 2), which is then the argmax of the last row.
    let logits = score_logits(dir.path(), &ids, Some(30));
    let row = |i: usize| &logits[i * 256..(i + 1) * 256];
    assert!(ids.len() == 70 || argmax(row(ids.len() - 1)) == 2, "{} tokens, no EOS", ids.len());
    assert!(ids.len() > 60, "{out:?}");
    let want_first = argmax(&read(&g, "llama/decode/prefill_logits")[29 * 256..30 * 256]);
    assert_eq!(ids[30] as usize, want_first, "first token vs the official prefill logits");
    let mut min_gap = f32::INFINITY;
    for k in 30..ids.len() {
        assert_eq!(ids[k] as usize, argmax(row(k - 1)), "generated token {} is not the argmax: {ids:?}", k - 30);
        let gap = top_gap(row(k - 1));
        min_gap = if gap.is_nan() { f32::NAN } else { min_gap.min(gap) };
    }
    // The argmax must not hinge on float noise (score vs official logits: ~1e-5).
    eprintln!("closest argmax gap {min_gap}");
    assert!(min_gap > 1e-3, "closest argmax gap {min_gap}");
    let (again, _) = generate(&greedy_args);
    assert_eq!(out, again, "temperature 0 is deterministic");

    // The default repeat penalty 1.1 over the last 64 tokens (CTRL's rule: positive logits
    // divided, negative ones multiplied), applied by hand to the score logits.
    let (_, ids) = generate(&["--temperature", "0"]);
    let logits = score_logits(dir.path(), &ids, Some(30));
    let mut changed = 0;
    for k in 30..ids.len() {
        let mut r = logits[(k - 1) * 256..k * 256].to_vec();
        let plain = argmax(&r);
        let seen: std::collections::BTreeSet<u32> = ids[k.saturating_sub(64)..k].iter().copied().collect();
        for &t in &seen {
            let l = &mut r[t as usize];
            *l = if *l > 0.0 { *l / 1.1 } else { *l * 1.1 };
        }
        assert_eq!(ids[k] as usize, argmax(&r), "penalised token {} is not the penalised argmax", k - 30);
        changed += (plain != argmax(&r)) as usize;
    }
    assert!(changed > 0, "the penalty never changed a choice: this check would not see it ignored");

    // Top-k sampling with a seed: reproducible, every token among the 5 most likely of its
    // row, and not the greedy sequence.
    let sampled_args = ["--temperature", "0.8", "--top-k", "5", "--seed", "3", "--repeat-penalty", "1"];
    let (sampled, ids) = generate(&sampled_args);
    let (sampled2, _) = generate(&sampled_args);
    assert_eq!(sampled, sampled2, "seeded sampling is reproducible");
    // The rank of each sampled token in the logits of its row (0 = the argmax).
    let ranks = |ids: &[u32]| -> Vec<usize> {
        let logits = score_logits(dir.path(), ids, Some(30));
        (30..ids.len())
            .map(|k| {
                let r = &logits[(k - 1) * 256..k * 256];
                r.iter().filter(|&&x| x > r[ids[k] as usize]).count()
            })
            .collect()
    };
    let top_k = ranks(&ids);
    eprintln!("ranks with --top-k 5: {top_k:?}");
    for (i, rank) in top_k.iter().enumerate() {
        assert!(*rank < 5, "sampled token {i} has rank {rank}");
    }
    assert!(top_k.iter().any(|&r| r > 0), "sampling at temperature 0.8 picked the argmax every time: {sampled:?}");
    // Without --top-k the same seed draws a token of rank ≥ 5 (the fixture's rows are flat
    // enough), so a sampler that ignored top-k would fail the rank check above.
    let (_, ids) = generate(&["--temperature", "0.8", "--seed", "3", "--repeat-penalty", "1"]);
    let free = ranks(&ids);
    eprintln!("ranks without top-k: {free:?}");
    assert!(free.iter().any(|&r| r >= 5), "without top-k no token of rank ≥ 5 was drawn: the top-k check would not see it ignored");
}

#[test]
fn user_errors_are_one_line_with_exit_code_two() {
    let dir = model_dir(256);
    let (code, _, err) = clex(&["generate", "-m", "/nonexistent/model", "-p", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/model") && !err.contains("panicked") && !err.contains("backtrace"), "{err}");
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "--dtype", "f64"]);
    assert_eq!(code, 2);
    // clap's message: "invalid value 'f64' for '--dtype <DTYPE>'" and the accepted values.
    assert!(err.contains("'f64'") && err.contains("--dtype") && err.contains("f32, f16, bf16"), "{err}");
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
    // A generation whose KV cache would not fit in memory is refused before allocating
    // (the prompt goes through the cache in chunks, so only the cache grows with the length).
    let (code, _, err) = clex(&["generate", "-m", p(dir.path()), "-p", "a", "-n", "100000000000", "--max-seq-len", "200000000000"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs about") && err.contains("GiB") && err.contains("available"), "{err}");
}

/// `clex inspect` prints the learned θ(t) table of the CLEX fixture, which the official
/// CLEX code computed (`llama/theta_table`, t = 1..8): every entry in the JSON, and the three
/// printed frequencies of every row in the text.
#[test]
fn inspect_shows_the_official_theta_table() {
    let dir = model_dir(256);
    let want = read(&golden(&fixture("logits.safetensors")), "llama/theta_table");
    let (code, out, err) = clex(&["inspect", "-m", p(dir.path()), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rope"]["kind"], "clex");
    assert_eq!(v["parameters"], 123968);
    let theta: Vec<Vec<f64>> =
        v["theta"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    assert_eq!((theta.len(), theta[0].len()), (8, 8));
    let rel = |got: f64, want: f32| (got - want as f64).abs() / (want as f64).abs();
    let worst = (0..64).map(|i| rel(theta[i / 8][i % 8], want[i])).fold(0.0, nan_max);
    eprintln!("θ table vs official: worst relative error {worst:e}");
    // measured 3.3e-7 (our f32 ODE vs the official f32 ODE); 10x margin.
    assert!(worst < 3.3e-6, "θ table vs official: worst relative error {worst}");

    let (code, text, _) = clex(&["inspect", "-m", p(dir.path())]);
    assert_eq!(code, 0);
    assert!(text.contains("CLEX θ(t) for t = 1..8") && text.contains("parameters: 123968"), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("t = ")).collect();
    assert_eq!(rows.len(), 8, "{text}");
    let mut worst = 0.0f64;
    for (t, line) in rows.iter().enumerate() {
        assert!(line.contains(&format!("up to {:>7} tokens", (t + 1) * 32)), "{line}");
        // "θ_0 v  θ_4 v  θ_7 v", printed with 7 significant digits.
        let words: Vec<&str> = line.split_whitespace().collect();
        for (k, name) in [(0, "θ_0"), (4, "θ_4"), (7, "θ_7")] {
            let at = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("{name} in {line}"));
            let got: f64 = words[at + 1].parse().unwrap();
            worst = nan_max(worst, rel(got, want[t * 8 + k]));
            // measured 3.1e-7; the bound is the JSON's 3.3e-7 plus printing's 5e-7, 6x that.
            assert!(rel(got, want[t * 8 + k]) < 5e-6, "t = {}: {name} {got} vs official {}", t + 1, want[t * 8 + k]);
        }
    }
    eprintln!("printed θ vs official: worst relative error {worst:e}");
    let (code, _, err) = clex(&["inspect", "-m", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
}

/// `clex inspect --plot` draws the CLEX fixture's θ_i(t) / θ_i(1) for i = 0, K/8, K/4, K/2,
/// 3K/4, K − 1 (K = 8: 0, 1, 2, 4, 6, 7), one line each, titled with the directory's name;
/// a model without a CLEX layer is a one-line error with exit code 2 and no file.
#[test]
fn inspect_plots_theta_of_clex_models_only() {
    let dir = model_dir(256);
    let svg_path = dir.path().join("theta.svg");
    let (code, _, err) = clex(&["inspect", "-m", p(dir.path()), "--plot", p(&svg_path)]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 6, "one line per plotted frequency");
    // The `<text>` contents (plotters puts each on its own line).
    let texts: Vec<&str> = svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim())).collect();
    for i in [0, 1, 2, 4, 6, 7] {
        assert!(texts.contains(&format!("θ_i, i = {i}").as_str()), "no legend entry for θ_{i} in {texts:?}");
    }
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    assert!(texts.contains(&format!("{name}: CLEX frequencies relative to RoPE").as_str()), "title names {name}: {texts:?}");
    assert!(!svg.contains(p(dir.path())), "the title has the directory's name, not its path");

    let plain = id_model_dir(&hf_fixture("llama_default.json"), &hf_fixture("llama.safetensors"));
    let plain_svg = plain.path().join("theta.svg");
    let (code, _, err) = clex(&["inspect", "-m", p(plain.path()), "--plot", p(&plain_svg)]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--plot") && err.contains("no CLEX layer"), "{err}");
    assert!(!plain_svg.exists(), "no chart for a model without CLEX");
}

/// `clex score` reproduces the official CLEX code's logits (full forward at N = 100, t = 4)
/// and its cached decode across t boundaries (prefill 30, then 40 single steps).
#[test]
fn score_reproduces_golden_logits() {
    let dir = model_dir(256);
    let g = golden(&fixture("logits.safetensors"));
    let tensor = |name: &str| read(&g, name);
    let ids_of = |v: &[f32]| v.iter().map(|x| (*x as u32).to_string()).collect::<Vec<_>>().join(",");
    let out = dir.path().join("logits.safetensors");
    let (code, stdout, err) = clex(&["score", "-m", p(dir.path()), "--ids", &ids_of(&tensor("inputs/ids")[..100]), "--out", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("100 tokens, mean NLL"), "{stdout}");
    let got = clex_models::weights::Weights::open(std::slice::from_ref(&out)).unwrap().read_f32("logits").unwrap();
    assert_eq!(got.1, vec![1, 100, 256]);
    let worst = max_abs_diff(&got.0, &tensor("llama/L100/logits"));
    eprintln!("score vs golden L100: {worst:e}");
    // measured 8.1e-6 (f32, ours vs the official code); 10x margin. θ(t-1) moves it by 8.
    assert!(worst < 8e-5, "score vs golden L100: {worst}");

    let decode = tensor("llama/decode/input_ids");
    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", &ids_of(&decode), "--prefill", "30", "--out", p(&out)]);
    assert_eq!(code, 0, "{err}");
    let got = clex_models::weights::Weights::open(&[out]).unwrap().read_f32("logits").unwrap().0;
    let worst = max_abs_diff(&got[30 * 256..], &tensor("llama/decode/step_logits"));
    eprintln!("score --prefill 30 vs golden step logits: {worst:e}");
    // measured 9.3e-6; 10x margin. A full recompute instead of the official cache rule: 2.3.
    assert!(worst < 9e-5, "score --prefill 30 vs golden step logits: {worst}");

    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", "1,2,999"]);
    assert_eq!(code, 2);
    assert!(err.contains("999") && err.contains("256"), "{err}");
    let (code, _, err) = clex(&["score", "-m", p(dir.path()), "--ids", "1,x"]);
    assert_eq!(code, 2);
    assert!(err.contains("'x'") && err.contains("--ids"), "{err}");
}

/// `clex perplexity` (chunks protocol) equals the NLL that `clex score` gives on the same
/// windows; several models go into one report and one plot.
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
    eprintln!("chunks vs score: {:e}", (r["mean_nll"].as_f64().unwrap() - mean).abs());
    // measured 0 (the same forwards; only the f64 sums run in another order).
    assert!((r["mean_nll"].as_f64().unwrap() - mean).abs() < 1e-9, "{} vs {mean}", r["mean_nll"]);

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
    // clap's message: "invalid value 'nope' for '--protocol <PROTOCOL>'" and the accepted values.
    assert!(err.contains("'nope'") && err.contains("--protocol") && err.contains("chunks, kv-chunks, sliding"), "{err}");
}

/// The transformers LLaMA with its default rope (P = 128) and [`id_model_dir`]'s tokenizer,
/// and the first `n` ids of the golden inputs (a Hamlet line, as bytes).
fn hf_llama(n: usize) -> (tempfile::TempDir, Vec<u32>) {
    let dir = id_model_dir(&hf_fixture("llama_default.json"), &hf_fixture("llama.safetensors"));
    let ids = as_ids(&read(&golden(&hf_fixture("logits.safetensors")), "inputs/L512"));
    (dir, ids[..n].to_vec())
}

/// kv-chunks feeds each window as 4 chunks of 16 through one KV cache and scores each
/// chunk's own next-token predictions (the official evaluation): on a plain-rope model that
/// is the full forward's NLL of the same targets (every position j of a window with
/// j mod 16 ≠ 0), taken here from `clex score` of each window. Feeding the chunks without
/// the cache scores the same targets with less context, and must not pass.
#[test]
fn kv_chunks_carry_the_cache_across_chunks() {
    let (dir, ids) = hf_llama(192);
    let r = perplexity(dir.path(), &ids, &["--lengths", "64", "--protocol", "kv-chunks", "--chunk", "16"]);
    assert_eq!((r["windows"].as_u64(), r["tokens"].as_u64()), (Some(3), Some(3 * 60)));
    let (mut want, mut no_cache) = (0.0, 0.0);
    for w in ids.chunks_exact(64) {
        let full = score_nll(dir.path(), w, None);
        want += (1..64).filter(|j| j % 16 != 0).map(|j| full[j - 1]).sum::<f64>();
        no_cache += w.chunks(16).map(|c| score_nll(dir.path(), c, None).iter().sum::<f64>()).sum::<f64>();
    }
    let (want, no_cache) = (want / 180.0, no_cache / 180.0);
    let got = r["mean_nll"].as_f64().unwrap();
    eprintln!("kv-chunks {got} vs score {want} (without the cache {no_cache})");
    // measured 7.9e-9 (cached chunks vs one forward); 10x margin.
    assert!((got - want).abs() < 1e-7, "kv-chunks {got} vs score {want}");
    assert!((no_cache - want).abs() > 1e-3, "chunks without the cache ({no_cache}) must be distinguishable from {want}");
}

/// kv-chunks on the CLEX fixture (P = 32): 96-token windows in 6 chunks of 16, so t goes
/// 1 → 2 → 3 between chunks and the cached keys are re-rotated through the cache (the
/// official rule: `CachePolicy::Reference`). A chunk size that divides P gives every token of
/// a chunk the t that one-token decoding gives it, so the reference is `clex score
/// --prefill 16` of each window (the decode path `score_reproduces_golden_logits` holds to
/// the official code's step logits across t = 1 → 2 → 3), at the same targets. A chunk
/// that straddles a multiple of P has no such reference, hence 16 rather than e.g. 24. The
/// full forward (t = 3 for every token) and the Recompute policy give other numbers.
#[test]
fn kv_chunks_follow_clex_t_across_chunks() {
    let dir = id_model_dir(&fixture("llama_clex.json"), &fixture("llama_clex.safetensors"));
    let ids = &as_ids(&read(&golden(&fixture("logits.safetensors")), "inputs/ids"))[..288];
    let r = perplexity(dir.path(), ids, &["--lengths", "96", "--protocol", "kv-chunks", "--chunk", "16"]);
    // Targets j of a window with j mod 16 ≠ 0: 90 per window.
    assert_eq!((r["windows"].as_u64(), r["tokens"].as_u64()), (Some(3), Some(3 * 90)));
    let (mut want, mut full_forward) = (0.0, 0.0);
    for w in ids.chunks_exact(96) {
        let decoded = score_nll(dir.path(), w, Some(16));
        let full = score_nll(dir.path(), w, None);
        want += (1..96).filter(|j| j % 16 != 0).map(|j| decoded[j - 1]).sum::<f64>();
        full_forward += (1..96).filter(|j| j % 16 != 0).map(|j| full[j - 1]).sum::<f64>();
    }
    let (want, full_forward) = (want / 270.0, full_forward / 270.0);
    let got = r["mean_nll"].as_f64().unwrap();
    eprintln!("CLEX kv-chunks {got} vs score --prefill 16 {want}: {:e} (full forward {full_forward})", (got - want).abs());
    // Measured 1.0e-7: burn-flex's attention kernel sums a 16-token chunk's scores through
    // GEMM tiles and a one-token step's through dot products, so the two differ by f32
    // reassociation only (6.8e-9 when both were the same matmuls). 1e-6 is 10x that and
    // 1000x below what a wrong t rule gives (the full-forward check below: > 1e-3).
    assert!((got - want).abs() < 1e-6, "CLEX kv-chunks {got} vs score --prefill 16 {want}");
    assert!((full_forward - want).abs() > 1e-3, "the full forward ({full_forward}) must be distinguishable from {want}");
}

/// The sliding protocol (length 64, stride 24, over 150 tokens: windows at 0, 24, 48, 72,
/// 96, the last one short) scores every token once, from the first window that reaches it,
/// with that window's context: a hand computation from `clex score` of each window.
#[test]
fn sliding_window_scores_each_token_once_with_its_window() {
    let (dir, ids) = hf_llama(150);
    let r = perplexity(dir.path(), &ids, &["--lengths", "64", "--protocol", "sliding", "--stride", "24"]);
    assert_eq!((r["windows"].as_u64(), r["tokens"].as_u64()), (Some(5), Some(149)));
    let (mut total, mut scored, mut prev_end) = (0.0, 0, 0);
    for begin in [0, 24, 48, 72, 96] {
        let end = (begin + 64).min(ids.len());
        let nll = score_nll(dir.path(), &ids[begin..end], None);
        // Target j (a global position) is predicted from ids[begin..j]: entry j - begin - 1.
        for j in prev_end.max(begin + 1)..end {
            total += nll[j - begin - 1];
            scored += 1;
        }
        prev_end = end;
    }
    assert_eq!((scored, prev_end), (149, 150));
    let (got, want) = (r["mean_nll"].as_f64().unwrap(), total / 149.0);
    eprintln!("sliding {got} vs hand {want}: {:e}", (got - want).abs());
    // measured 0 (the same forwards; only the f64 sums run in another order).
    assert!((got - want).abs() < 1e-9, "sliding {got} vs hand {want}");
}

/// `--rope-scaling KIND --rope-factor 4` on the default-rope transformers models (LLaMA and
/// GPT-NeoX, P = 128) gives transformers' NLL of the same weights under that rope
/// (`<arch>/<kind>/L512/logits`, one 512-token window), and `--rope-scaling none` takes a
/// scaled config back to the default rope.
#[test]
fn rope_scaling_override_matches_transformers() {
    let g = golden(&hf_fixture("logits.safetensors"));
    let ids = as_ids(&read(&g, "inputs/L512"));
    let want_nll = |key: &str| {
        let logits = read(&g, key);
        (0..511).map(|i| nll(&logits[i * 256..(i + 1) * 256], ids[i + 1] as usize)).sum::<f64>() / 511.0
    };
    let mut worst = 0.0f64;
    for arch in ["llama", "gpt_neox"] {
        let weights = hf_fixture(&format!("{arch}.safetensors"));
        let dir = id_model_dir(&hf_fixture(&format!("{arch}_default.json")), &weights);
        let default = want_nll(&format!("{arch}/default/L512/logits"));
        for kind in ["linear", "dynamic", "yarn"] {
            let r = perplexity(dir.path(), &ids, &["--lengths", "512", "--rope-scaling", kind, "--rope-factor", "4"]);
            assert_eq!(r["tokens"].as_u64(), Some(511));
            let (got, want) = (r["mean_nll"].as_f64().unwrap(), want_nll(&format!("{arch}/{kind}/L512/logits")));
            eprintln!("{arch} {kind}: {got} vs transformers {want} (default rope {default})");
            worst = nan_max(worst, (got - want).abs());
            // The scaled ropes are far apart (≥ 0.02 in mean NLL), so the check sees the kind.
            assert!((want - default).abs() > 2e-2, "{arch} {kind}");
            // measured 2.4e-7 (f32 forwards, ours vs transformers); 10x margin.
            assert!((got - want).abs() < 2.4e-6, "{arch} --rope-scaling {kind}: {got} vs transformers {want}");
        }
        let scaled = id_model_dir(&hf_fixture(&format!("{arch}_linear.json")), &weights);
        let r = perplexity(scaled.path(), &ids, &["--lengths", "512", "--rope-scaling", "none"]);
        let got = r["mean_nll"].as_f64().unwrap();
        eprintln!("{arch} linear config, --rope-scaling none: {got} vs default {default}");
        worst = nan_max(worst, (got - default).abs());
        assert!((got - default).abs() < 2.4e-6, "{arch} linear config with --rope-scaling none: {got} vs default {default}");
    }
    eprintln!("worst |Δ mean NLL| {worst:e}");
}

/// The numbers `clex rope` prints: (attention scaling, inv_freq or θ).
fn rope_output(config: &Path, length: usize) -> (String, f64, Vec<f64>) {
    let (code, out, err) = clex(&["rope", "-c", p(config), "-n", &length.to_string()]);
    assert_eq!(code, 0, "{config:?}: {err}");
    let scale = out.lines().find_map(|l| l.strip_prefix("attention scaling: ")).unwrap_or_else(|| panic!("{out}"));
    let after = out.split_once("inv_freq[").unwrap_or_else(|| panic!("{out}")).1;
    let values = after.lines().skip(1).flat_map(|l| l.split_whitespace()).map(|w| w.parse::<f64>().unwrap()).collect();
    (out.clone(), scale.parse().unwrap(), values)
}

/// `clex rope` prints transformers' rope tables (inv_freq and attention scaling of all 48
/// tables of clex-core's `rope_tables` fixture: default / linear / dynamic / yarn, full and
/// partial rotary, tiny and LLaMA-7B geometry, 64 to 16384 tokens), and for a CLEX config
/// the official CLEX code's θ(t) of an untrained layer (D = 0) at the t the length implies.
#[test]
fn rope_prints_the_reference_tables() {
    let tables = golden(&core_fixture("rope_tables.safetensors"));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(core_fixture("rope_tables.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let (mut worst, mut worst_scale, mut checked) = (0.0f64, 0.0f64, 0);
    for (key, entry) in manifest["rope_tables"].as_object().unwrap() {
        // The table's settings as a config.json (as clex-core's rope_tables test builds them).
        let rp = &entry["rope_parameters"];
        let partial = rp.get("partial_rotary_factor").and_then(|v| v.as_f64()).unwrap_or(1.0);
        let head_dim = (entry["rotary_dim"].as_f64().unwrap() / partial).round() as u64;
        let json =
            serde_json::json!({"head_dim": head_dim, "max_position_embeddings": entry["max_position_embeddings"], "rope_parameters": rp});
        std::fs::write(&cfg, json.to_string()).unwrap();
        let length: usize = key.rsplit('/').next().unwrap()[1..].parse().unwrap();
        let (out, scale, inv) = rope_output(&cfg, length);
        assert!(out.starts_with(&format!("kind: {}", rp["rope_type"].as_str().unwrap())), "{key}: {out}");
        let want = read(&tables, &format!("{key}/inv_freq"));
        assert_eq!(inv.len(), want.len(), "{key}");
        for (a, b) in inv.iter().zip(&want) {
            worst = nan_max(worst, (a - *b as f64).abs() / *b as f64);
        }
        let want_scale = read(&tables, &format!("{key}/attention_scaling"))[0] as f64;
        worst_scale = nan_max(worst_scale, (scale - want_scale).abs());
        // Printed in full f32 precision; measured 3.6e-8 (an f32 ulp here is 1.2e-7); ~7x.
        assert!((scale - want_scale).abs() < 2.5e-7, "{key}: attention scaling {scale} vs {want_scale}");
        checked += 1;
    }
    assert_eq!(checked, 48);
    eprintln!("clex rope vs transformers: inv_freq worst relative error {worst:e}, attention scaling {worst_scale:e}");
    // measured 5.5e-7: the 7 printed digits (≤ 5e-7) on top of f32 pow (an ulp, clex-core's
    // rope_tables test); 4x margin, as printing bounds it.
    assert!(worst < 2e-6, "clex rope vs transformers inv_freq: worst relative error {worst}");

    // CLEX: P = 32, T_max = 8; t = ceil(N / P), clamped to T_max beyond P·T_max.
    let official = read(&golden(&core_fixture("clex_layer.safetensors")), "layer/d16_tanh_D0/theta_table");
    let mut worst = 0.0f64;
    for (n, t) in [(1, 1), (32, 1), (33, 2), (100, 4), (256, 8), (300, 8)] {
        let (out, scale, theta) = rope_output(&fixture("llama_clex.json"), n);
        assert!(out.contains(&format!("CLEX: t = {t} for N = {n}")), "{out}");
        assert_eq!(out.contains("beyond P·T_max"), n > 256, "{out}");
        assert_eq!((scale, theta.len()), (1.0, 8));
        for (a, b) in theta.iter().zip(&official[(t - 1) * 8..t * 8]) {
            worst = nan_max(worst, (a - *b as f64).abs() / *b as f64);
        }
    }
    eprintln!("clex rope vs official untrained θ(t): worst relative error {worst:e}");
    // measured 2.4e-7 (printing's 7 digits bound it at 5e-7); 4x that bound.
    assert!(worst < 2e-6, "clex rope vs official untrained θ(t): worst relative error {worst}");
}

/// `clex passkey` builds each prompt as asked: exactly `length` tokens, BOS, then filler
/// with the needle at round(depth · filler) (the depth counted in filler tokens, checked
/// against the position of the needle that `--json` reports from the prompt itself, by hand
/// from the byte counts of the texts), then the question; it reports every cell and trial,
/// counts a trial correct exactly when the answer's first number is the key, and is
/// reproducible from the seed. On this random model every answer is wrong (0 of 12), so
/// the scoring comparison here is 0 == 0: scoring itself is checked by the unit test of
/// `retrieved` in clex-eval/src/passkey.rs, and retrieval by a model that can (every trial
/// right) by `clex-cli/tests/gguf.rs`'s SmolLM2 test.
#[test]
fn passkey_prompts_have_the_requested_length_and_depth() {
    let dir = model_dir(256);
    let out = dir.path().join("pk.json");
    let args = ["passkey", "-m", p(dir.path()), "--lengths", "160,256", "--depths", "0,0.5,1", "--trials", "2", "--json", p(&out)];
    let (code, stdout, err) = clex(&args);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("accuracy"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let cells = v["results"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    // The byte tokenizer: one token per byte of ASCII text; the fixture has no
    // tokenizer_config.json, so sequences start with BOS.
    let question = "What is the pass key? The pass key is".len();
    let mut keys = std::collections::BTreeSet::new();
    for (c, (len, depth)) in cells.iter().zip([(160, 0.0), (160, 0.5), (160, 1.0), (256, 0.0), (256, 0.5), (256, 1.0)]) {
        assert_eq!((c["length"].as_u64(), c["depth"].as_f64(), c["trials"].as_u64()), (Some(len), Some(depth), Some(2)), "{c}");
        let detail = c["detail"].as_array().unwrap();
        assert_eq!(detail.len(), 2);
        let mut correct = 0;
        for d in detail {
            let key = d["key"].as_u64().unwrap();
            assert!((10000..100000).contains(&key), "{d}");
            keys.insert(key);
            let needle = format!("The pass key is {key}. Remember it. {key} is the pass key. ").len();
            assert_eq!(d["needle_tokens"].as_u64(), Some(needle as u64));
            assert_eq!(d["prompt_tokens"].as_u64(), Some(len), "{d}");
            let filler = len as usize - 1 - needle - question;
            let want_at = 1 + (filler as f64 * depth).round() as usize;
            assert_eq!(d["needle_at"].as_u64(), Some(want_at as u64), "length {len}, depth {depth}: {d}");
            let answer = d["answer"].as_str().unwrap();
            let digits: String = answer.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
            correct += (digits == key.to_string()) as u64;
        }
        assert_eq!(c["correct"].as_u64(), Some(correct), "{c}");
        assert_eq!(c["accuracy"].as_f64(), Some(correct as f64 / 2.0));
    }
    assert_eq!(keys.len(), 12, "every trial draws its own key");
    let (_, again, _) = clex(&args);
    assert_eq!(stdout, again);
    let (code, _, err) = clex(&["passkey", "-m", p(dir.path()), "--lengths", "20"]);
    assert_eq!(code, 2);
    assert!(err.contains("--lengths 20") && err.contains("too short"), "{err}");
}
