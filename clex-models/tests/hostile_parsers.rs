//! Hostile inputs through the library (issue 18): one named test per class of the issue
//! (ids outside the vocabulary, sizes checked before allocation, GGUF data-section
//! arithmetic, overflow, silently accepted values, messages, non-regular files), then the
//! seeded corpus of `hostile_corpus` through the entry points a program uses (open, tokenizer,
//! load, one forward) under `catch_unwind`, and structure-aware mutation of the three binary
//! parsers (safetensors header, GGUF, tokenizer.json). Every failure must be an `Err` with a
//! one-line message; counts per kind are printed.

mod common;
mod gguf_files;
mod hostile_corpus;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::DType;
use clex_models::gguf::GgufFile;
use clex_models::weights::Weights;
use clex_models::{CachePolicy, ModelError, ModelSource, Session};
use common::B;
use hostile_corpus::{Base, Case, Kind, Rng, corpus, mutate_bytes, mutate_json};
use serde_json::json;

/// Longest message a clean error may have.
const MAX_MESSAGE: usize = 2000;
/// Longest a single case may take (debug build, 2 cores).
const MAX_CASE: Duration = Duration::from_secs(20);

/// The outcome of one input.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Accepted and ran.
    Ok,
    /// Refused with a one-line message.
    Clean,
    /// Refused with a message of several lines or an unbounded length.
    Messy(String),
    /// Panicked.
    Panic(String),
    /// Took longer than [`MAX_CASE`].
    Hang,
}

/// Runs `f` under `catch_unwind` and a clock.
fn outcome(f: impl FnOnce() -> Result<(), String>) -> Outcome {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f));
    if start.elapsed() > MAX_CASE {
        return Outcome::Hang;
    }
    match result {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(m)) if m.lines().count() <= 1 && m.len() <= MAX_MESSAGE && !m.is_empty() => Outcome::Clean,
        Ok(Err(m)) => Outcome::Messy(m.chars().take(300).collect()),
        Err(p) => {
            Outcome::Panic(p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
        }
    }
}

fn s(e: ModelError) -> String {
    e.to_string()
}

/// What a program does with a model path: open it, take its tokenizer (checked against the
/// model), load it, run one forward over an encoded text.
fn use_model(path: &Path) -> Result<(), String> {
    let source = ModelSource::open(path).map_err(s)?;
    let (tok, _) = source.tokenizer_or(None).map_err(s)?;
    let model = source.load::<B>(&Default::default(), DType::F32).map_err(s)?;
    let mut ids: Vec<u32> = tok.encode("Hostile inputs, politely refused.", true).map_err(|e| e.to_string())?.get_ids().to_vec();
    if let Some(b) = model.config().bos_token_id {
        ids.insert(0, b);
    }
    let logits = Session::new(&model, CachePolicy::Reference).logits(&ids).map_err(s)?;
    assert_eq!(logits.len(), ids.len() * model.config().vocab_size);
    Ok(())
}

/// Per-kind counts.
#[derive(Default, Debug)]
struct Counts {
    ok: usize,
    clean: usize,
    messy: usize,
    panic: usize,
    hang: usize,
}

fn tally(results: &[(Kind, String, Outcome)]) -> std::collections::BTreeMap<Kind, Counts> {
    let mut by_kind = std::collections::BTreeMap::<Kind, Counts>::new();
    for (kind, _, o) in results {
        let c = by_kind.entry(*kind).or_default();
        match o {
            Outcome::Ok => c.ok += 1,
            Outcome::Clean => c.clean += 1,
            Outcome::Messy(_) => c.messy += 1,
            Outcome::Panic(_) => c.panic += 1,
            Outcome::Hang => c.hang += 1,
        }
    }
    by_kind
}

fn err_of(path: &Path) -> String {
    use_model(path).unwrap_err()
}

fn write_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut c = Base::new().config;
    edit(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
}

/// Class 1: ids outside the model's vocabulary are refused where they enter, naming the
/// key or the tokenizer and the accepted range: config bos/eos, GGUF bos, tokenizer ids
/// that exceed the vocabulary while its entry count does not, padding and post-processor ids.
#[test]
fn class1_token_ids_outside_the_vocabulary_are_refused_at_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::new();
    base.write(dir.path());
    use_model(dir.path()).unwrap();
    write_config(dir.path(), |c| c["bos_token_id"] = json!(256));
    let e = err_of(dir.path());
    assert!(e.contains("bos_token_id") && e.contains("256") && e.contains("0 to 255"), "{e}");
    write_config(dir.path(), |c| c["bos_token_id"] = json!([1u64 << 33]));
    let e = err_of(dir.path());
    assert!(e.contains("bos_token_id") && e.contains("8589934592"), "{e}");
    // EOS ids are only compared with sampled ids: a control token past the model's rows is
    // accepted (llama.cpp files have them), a negative one is not an id.
    write_config(dir.path(), |c| c["eos_token_id"] = json!([2, 1000]));
    use_model(dir.path()).unwrap();
    write_config(dir.path(), |c| c["eos_token_id"] = json!(-1));
    let e = err_of(dir.path());
    assert!(e.contains("eos_token_id") && e.contains("-1"), "{e}");
    write_config(dir.path(), |_| {});
    // 256 entries, but one id is 70000.
    let mut t = base.tokenizer.clone();
    t["model"]["vocab"]["\u{00ff}"] = json!(70000);
    std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("tokenizer.json") && e.contains("70000") && e.contains("vocab_size is 256"), "{e}");
    let mut t = base.tokenizer.clone();
    t["padding"] = json!({"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": 300, "pad_type_id": 0, "pad_token": "<pad>"});
    std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("300") && e.contains("padding"), "{e}");
    let mut t = base.tokenizer.clone();
    t["post_processor"] = json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [4000], "tokens": ["<s>"]}}});
    std::fs::write(dir.path().join("tokenizer.json"), t.to_string()).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("4000") && e.contains("post-processor") && e.contains("<s>"), "{e}");
    // GGUF metadata: the key in the file is named.
    let mut w = hostile_corpus::tiny_gguf();
    w.kvs.retain(|(k, _, _)| k != "tokenizer.ggml.bos_token_id");
    w.u32("tokenizer.ggml.bos_token_id", 5000);
    let e = err_of(&w.write(dir.path(), "bos.gguf"));
    assert!(e.contains("tokenizer.ggml.bos_token_id") && e.contains("5000"), "{e}");
}

/// Class 2: sizes from a file are bounded before anything is sized by them (huge layers,
/// head_dim, hidden_size, T_max, p, a tiny RK4 step), each naming the key and the range.
#[test]
fn class2_sizes_are_checked_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    Base::new().write(dir.path());
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("num_hidden_layers", json!(1u64 << 40), "num_hidden_layers"),
        ("head_dim", json!(1u64 << 40), "head_dim"),
        ("hidden_size", json!(1u64 << 40), "hidden_size"),
        ("vocab_size", json!(u64::MAX), "vocab_size"),
    ];
    for (key, v, named) in cases {
        write_config(dir.path(), |c| c[*key] = v.clone());
        let e = err_of(dir.path());
        assert!(e.contains(named) && e.contains("<="), "{key}: {e}");
    }
    let rope = |c: &mut serde_json::Value, k: &str, v: serde_json::Value| c["rope_scaling"][k] = v;
    for (key, v, range) in [
        ("max_factor", json!(1u64 << 40), "<= 65536"),
        ("param_factor", json!(u64::MAX), "<= 1024"),
        ("time_dt", json!(1e-9), "RK4 step count"),
        ("time_dt", json!(1e-300), "RK4 step count"),
    ] {
        write_config(dir.path(), |c| rope(c, key, v.clone()));
        let e = err_of(dir.path());
        assert!(e.contains(&format!("rope_scaling.{key}")) && e.contains(range), "{key}: {e}");
    }
    // p · k² · steps bounds the θ table's solve (a hang otherwise).
    write_config(dir.path(), |c| {
        rope(c, "max_factor", json!(60000));
        rope(c, "param_factor", json!(1000));
        rope(c, "time_dt", json!(0.1));
    });
    let e = err_of(dir.path());
    assert!(e.contains("multiply-adds"), "{e}");
    // 2 · p · k² ODE weights bound the fresh layer `clex rope` builds from a config alone.
    write_config(dir.path(), |c| {
        c["head_dim"] = json!(1024);
        rope(c, "max_factor", json!(1));
        rope(c, "param_factor", json!(1024));
    });
    let e = err_of(dir.path());
    assert!(e.contains("rope_scaling.param_factor") && e.contains("ODE weights"), "{e}");
}

/// Class 3: GGUF data-section arithmetic: an alignment past the file, zero-width rows, and
/// a tensor whose shape disagrees with the metadata (refused before dequantising).
#[test]
fn class3_gguf_data_section_arithmetic() {
    let dir = tempfile::tempdir().unwrap();
    let good = hostile_corpus::tiny_gguf();
    use_model(&good.write(dir.path(), "good.gguf")).unwrap();
    for a in [1u64 << 40, 1 << 63] {
        let mut w = hostile_corpus::tiny_gguf();
        w.raw("general.alignment", gguf_files::U64, a.to_le_bytes().to_vec());
        let e = err_of(&w.write(dir.path(), "align.gguf"));
        assert!(e.contains("general.alignment") && e.contains(&a.to_string()), "{e}");
    }
    let mut w = hostile_corpus::tiny_gguf();
    w.tensors.iter_mut().find(|t| t.name == "blk.0.attn_q.weight").unwrap().dims = vec![0, 64];
    let e = err_of(&w.write(dir.path(), "zero.gguf"));
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("include 0"), "{e}");
    let mut w = hostile_corpus::tiny_gguf();
    w.tensors.iter_mut().find(|t| t.name == "blk.1.ffn_up.weight").unwrap().dims = vec![172, 64];
    let path = w.write(dir.path(), "shape.gguf");
    let e = err_of(&path);
    assert!(e.contains("blk.1.ffn_up.weight") && e.contains("[64, 172]") && e.contains("[172, 64]"), "{e}");
}

/// Class 4: products that would overflow are refused by checked arithmetic, in debug and
/// release alike (this test runs in whichever build `cargo test` makes).
#[test]
fn class4_size_products_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    Base::new().write(dir.path());
    for (key, v) in
        [("num_attention_heads", json!(u64::MAX)), ("intermediate_size", json!(1u64 << 63)), ("max_position_embeddings", json!(u64::MAX))]
    {
        write_config(dir.path(), |c| c[key] = v.clone());
        let e = err_of(dir.path());
        assert!(e.contains(key), "{key}: {e}");
    }
    write_config(dir.path(), |c| c["rope_scaling"]["param_factor"] = json!(1u64 << 62));
    assert!(err_of(dir.path()).contains("param_factor"));
    let config = ModelSource::open(&{
        write_config(dir.path(), |_| {});
        dir.path().to_path_buf()
    })
    .unwrap()
    .config()
    .clone();
    assert!(config.parameter_count().is_some_and(|n| n > 100_000), "{:?}", config.parameter_count());
    let mut huge = config.clone();
    (huge.vocab_size, huge.hidden_size, huge.num_layers) = (usize::MAX, usize::MAX, usize::MAX);
    assert_eq!(huge.parameter_count(), None);
}

/// Class 5: values that used to pass silently: YaRN attention_factor <= 0, an original
/// context of 0, a NaN GGUF base, NaN/inf weights (refused naming the tensor unless allowed).
#[test]
fn class5_invalid_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    Base::new().write(dir.path());
    for (block, key) in [
        (json!({"type": "yarn", "factor": 4, "attention_factor": 0}), "attention_factor"),
        (json!({"type": "yarn", "factor": 4, "original_max_position_embeddings": 0}), "original_max_position_embeddings"),
        (
            json!({"type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 2, "original_max_position_embeddings": 16}),
            "high_freq_factor",
        ),
    ] {
        write_config(dir.path(), |c| c["rope_scaling"] = block.clone());
        let e = err_of(dir.path());
        assert!(e.contains(key), "{key}: {e}");
    }
    let mut w = hostile_corpus::tiny_gguf();
    w.kvs.retain(|(k, _, _)| k != "llama.rope.freq_base");
    w.f32("llama.rope.freq_base", f32::NAN);
    let e = err_of(&w.write(dir.path(), "nan.gguf"));
    assert!(e.contains("llama.rope.freq_base") && e.contains("NaN"), "{e}");
    // A NaN weight: named at load, loadable on request.
    write_config(dir.path(), |_| {});
    let tensors = hostile_corpus::read_safetensors(&hostile_corpus::fixtures().join("clex/llama_clex.safetensors"));
    let mut bad = tensors.clone();
    let t = bad.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    t.3[8..12].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let (h, d) = hostile_corpus::safetensors_parts(&bad);
    std::fs::write(dir.path().join("model.safetensors"), hostile_corpus::safetensors_bytes(&h, &d)).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("model.norm.weight") && e.contains("inf") && e.contains("index 2") && e.contains("--allow-nonfinite"), "{e}");
    let mut source = ModelSource::open(dir.path()).unwrap();
    source.set_allow_nonfinite(true);
    source.load::<B>(&Default::default(), DType::F32).unwrap();
}

/// Class 6: messages: one line, each value cut short (a 128 KB value is not echoed whole),
/// serde type errors name the key, a bad num_attention_heads is reported as itself.
#[test]
fn class6_messages_name_the_key_once_and_cut_values_short() {
    let dir = tempfile::tempdir().unwrap();
    Base::new().write(dir.path());
    write_config(dir.path(), |c| c["rms_norm_eps"] = json!("1e-6"));
    let e = err_of(dir.path());
    assert!(e.contains("rms_norm_eps") && e.contains("\"1e-6\""), "{e}");
    write_config(dir.path(), |c| c["hidden_act"] = json!("x".repeat(1 << 17)));
    let e = err_of(dir.path());
    assert!(e.contains("hidden_act") && e.len() < 400 && e.lines().count() == 1, "{} bytes: {}", e.len(), &e[..200.min(e.len())]);
    write_config(dir.path(), |c| {
        c["num_attention_heads"] = json!(1000);
        c.as_object_mut().unwrap().remove("head_dim");
    });
    let e = err_of(dir.path());
    assert!(e.contains("num_attention_heads") && !e.contains("partial_rotary_factor"), "{e}");
    // The error's Display already holds its cause once.
    let e = ModelSource::open(&dir.path().join("missing")).err().unwrap().to_string();
    assert_eq!(e.matches("not found").count(), 1, "{e}");
}

/// Class 7: a config, weights or tokenizer path that is a FIFO is refused without opening
/// it (opening would block until a writer comes).
#[test]
fn class7_fifos_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let mkfifo = |p: &Path| {
        std::fs::remove_file(p).ok();
        let ok = std::process::Command::new("mkfifo").arg(p).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "mkfifo {} failed", p.display());
    };
    let start = Instant::now();
    for name in ["tokenizer.json", "model.safetensors", "config.json"] {
        Base::new().write(dir.path());
        mkfifo(&dir.path().join(name));
        let e = err_of(dir.path());
        assert!(e.contains(name) && e.contains("not a regular file"), "{name}: {e}");
        // Writing the next directory's files into a FIFO would block.
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let fifo = dir.path().join("model.gguf");
    mkfifo(&fifo);
    let e = err_of(&fifo);
    assert!(e.contains("model.gguf") && e.contains("not a regular file"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// The seeded corpus through the library: no panic, no hang, every refusal one line.
#[test]
fn corpus_through_the_library_gives_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = corpus(dir.path(), 18);
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let start = Instant::now();
    let results: Vec<(Kind, String, Outcome)> = cases.iter().map(|c| (c.kind, c.name.clone(), outcome(|| use_model(&c.model)))).collect();
    let counts = tally(&results);
    println!("library corpus: {} cases in {:.1} s", cases.len(), start.elapsed().as_secs_f64());
    for (kind, c) in &counts {
        println!(
            "  {kind:?}: {} cases: clean {} / ok {} / messy {} / panic {} / hang {}",
            c.ok + c.clean + c.messy + c.panic + c.hang,
            c.clean,
            c.ok,
            c.messy,
            c.panic,
            c.hang
        );
    }
    let bad: Vec<_> = results.iter().filter(|(_, _, o)| !matches!(o, Outcome::Ok | Outcome::Clean)).collect();
    assert!(bad.is_empty(), "{} bad outcomes: {bad:#?}", bad.len());
}

/// Structure-aware mutation of the three binary parsers, seeded and bounded in time: the
/// safetensors header (read and every tensor decoded), GGUF (opened, config, tokenizer and
/// tensors), tokenizer.json (parsed, checked against a 256 vocabulary, encoding a text).
#[test]
fn mutated_binary_parsers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Duration::from_secs(8);
    let mut rng = Rng(0x18_18_18);
    let mut report = Vec::new();

    // safetensors
    let st = std::fs::read(hostile_corpus::fixtures().join("clex/llama_clex.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let path = dir.path().join("m.safetensors");
    let (mut n, mut results) = (0, Vec::new());
    let start = Instant::now();
    while n < 3000 && start.elapsed() < budget {
        let bytes = if n % 2 == 0 {
            mutate_bytes(&st, &mut rng, header)
        } else {
            // Mutate the header as JSON, keep the data.
            let mut h: serde_json::Value = serde_json::from_slice(&st[8..header]).unwrap();
            mutate_json(&mut h, &mut rng);
            hostile_corpus::safetensors_bytes(&h, &st[header..])
        };
        std::fs::write(&path, &bytes).unwrap();
        results.push((
            Kind::Safetensors,
            n.to_string(),
            outcome(|| {
                let w = Weights::open(std::slice::from_ref(&path)).map_err(s)?;
                for name in w.names() {
                    w.read_f32(&name).map_err(s)?;
                }
                Ok(())
            }),
        ));
        n += 1;
    }
    report.push(("safetensors", n, start.elapsed()));

    // GGUF
    let good = hostile_corpus::tiny_gguf();
    let gguf = good.bytes();
    let header = hostile_corpus::header_len(&good);
    let path = dir.path().join("m.gguf");
    let (mut n, start) = (0, Instant::now());
    while n < 3000 && start.elapsed() < budget {
        std::fs::write(&path, mutate_bytes(&gguf, &mut rng, header)).unwrap();
        results.push((
            Kind::Gguf,
            n.to_string(),
            outcome(|| {
                let g = GgufFile::open(&path).map_err(s)?;
                let config = clex_models::gguf::config(&g).map_err(s)?;
                clex_models::gguf::tokenizer(&g).map_err(s)?;
                let w = clex_models::gguf::checkpoint(&g).map_err(s)?;
                assert!(config.vocab_size > 0 && !w.names().is_empty());
                Ok(())
            }),
        ));
        n += 1;
    }
    report.push(("gguf", n, start.elapsed()));

    // tokenizer.json
    let good = hostile_corpus::tokenizer_json();
    let path = dir.path().join("tokenizer.json");
    let base = Base::new();
    base.write(&dir.path().join("model"));
    let source = ModelSource::open(&dir.path().join("model")).unwrap();
    let (mut n, start) = (0, Instant::now());
    while n < 2000 && start.elapsed() < budget {
        let text = if n % 3 == 0 {
            String::from_utf8_lossy(&mutate_bytes(good.to_string().as_bytes(), &mut rng, usize::MAX)).into_owned()
        } else {
            let mut t = good.clone();
            mutate_json(&mut t, &mut rng);
            t.to_string()
        };
        std::fs::write(&path, text).unwrap();
        results.push((
            Kind::Tokenizer,
            n.to_string(),
            outcome(|| {
                let (tok, _) = source.tokenizer_or(Some(&path)).map_err(s)?;
                tok.encode("Hostile inputs, politely refused.", true).map_err(|e| e.to_string())?;
                Ok(())
            }),
        ));
        n += 1;
    }
    report.push(("tokenizer.json", n, start.elapsed()));

    for (what, n, t) in &report {
        println!("mutation fuzz: {what}: {n} inputs in {:.1} s", t.as_secs_f64());
    }
    for (kind, c) in tally(&results) {
        println!("  {kind:?}: clean {} / ok {} / messy {} / panic {} / hang {}", c.clean, c.ok, c.messy, c.panic, c.hang);
    }
    assert!(report.iter().all(|(_, n, _)| *n >= 200), "too few iterations: {report:?}");
    let bad: Vec<_> = results.iter().filter(|(_, _, o)| !matches!(o, Outcome::Ok | Outcome::Clean)).take(20).collect();
    assert!(bad.is_empty(), "bad outcomes (first 20): {bad:#?}");
}
