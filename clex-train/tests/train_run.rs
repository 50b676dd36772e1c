//! Whole runs on a small corpus: a run interrupted after its first checkpoint and resumed
//! ends exactly where the uninterrupted run ends; corrupt checkpoints and bad data paths
//! give errors naming the file.

use std::path::{Path, PathBuf};

use clex_train::preset::RopeChoice;
use clex_train::trainer::{TrainOptions, train};

/// A few KB of the bundled corpus as documents whose ids put some in validation.
fn small_corpus(dir: &Path) -> PathBuf {
    let docs = clex_train::corpus::read_documents(&clex_train::corpus::bundled_corpus_path()).unwrap();
    let text = &docs[0].text[..60_000];
    let mut lines = String::new();
    // "kjv/ruth" hashes to validation, the others to train.
    for (i, id) in ["kjv/genesis", "kjv/exodus", "kjv/ruth", "kjv/numbers", "kjv/leviticus"].iter().enumerate() {
        let part = &text[i * 12_000..(i + 1) * 12_000];
        lines.push_str(&serde_json::json!({"id": id, "text": part}).to_string());
        lines.push('\n');
    }
    let p = dir.join("small.jsonl");
    std::fs::write(&p, lines).unwrap();
    p
}

fn options(run: PathBuf, data: PathBuf, steps: usize) -> TrainOptions {
    let mut o = TrainOptions::tiny(run);
    o.data = data;
    o.vocab_size = 320;
    o.seq_len = 64;
    o.batch_size = 2;
    o.steps = steps;
    o.checkpoint_every = 2;
    o.warmup = 2;
    o.valid_windows = 2;
    o.rope = RopeChoice::Clex { max_factor: 4 };
    o
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let full = train(&options(dir.path().join("full"), data.clone(), 4)).unwrap();
    // A run killed right after its first checkpoint: same options, but only checkpoint 1
    // survives (what a crash during interval 2 leaves behind).
    let cut = dir.path().join("cut");
    train(&options(cut.clone(), data.clone(), 4)).unwrap();
    for kind in ["model", "optim", "scheduler"] {
        std::fs::remove_file(cut.join(format!("checkpoint/{kind}-2.mpk"))).unwrap();
    }
    std::fs::remove_dir_all(cut.join("model")).unwrap();
    assert!(cut.join("checkpoint/model-1.mpk").exists());
    // ...is resumed.
    let mut o = options(cut, data, 4);
    o.resume = true;
    let resumed = train(&o).unwrap();
    assert_eq!(resumed.steps, 2, "only the missing interval ran");
    let same = read(&full.model_dir.join("model.safetensors")) == read(&resumed.model_dir.join("model.safetensors"));
    assert!(same, "a resumed run must end with the uninterrupted run's weights");
    assert_eq!(full.validation, resumed.validation);
    assert!(full.validation.iter().all(|(_, nll, _)| nll.is_finite()));
    let cfg: serde_json::Value = serde_json::from_str(&String::from_utf8(read(&full.model_dir.join("config.json"))).unwrap()).unwrap();
    assert_eq!(cfg["rope_scaling"]["type"], "clex");
    assert!(full.model_dir.join("tokenizer.json").exists());
    let no_tmp =
        std::fs::read_dir(dir.path().join("full/checkpoint")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(no_tmp, "atomic writes leave no temporary files");
    // The per-step log survives the resume: 4 rows, t sampled on each, identical to the full run's.
    let log = |d: &str| String::from_utf8(read(&dir.path().join(d).join("metrics.csv"))).unwrap();
    assert_eq!(log("full"), log("cut"));
    assert_eq!(log("full").lines().count(), 5, "{}", log("full"));
    assert!(log("full").lines().skip(1).all(|l| l.split(',').nth(3).is_some_and(|t| (1..=4).contains(&t.parse::<usize>().unwrap()))));
    let svg = String::from_utf8(read(&dir.path().join("full/loss.svg"))).unwrap();
    assert!(svg.contains("<polyline") && svg.contains("validation loss at 256"), "{svg}");
    // Every checkpoint validated at L and at 4L: each length's batches are counted only in
    // its own metric (weight 0 in the other).
    for epoch in 1..=2 {
        for (len, rows) in [(64, 2), (256, 1)] {
            let path = dir.path().join(format!("full/valid/epoch-{epoch}/Loss_at_{len}.log"));
            let log = String::from_utf8(read(&path)).unwrap();
            let counted: usize = log.lines().map(|l| l.split(',').nth(1).unwrap().parse::<usize>().unwrap()).sum();
            assert_eq!(counted, rows, "{}: {log}", path.display());
        }
    }
}

/// Per-step (loss, t) rows of a run's metrics.csv.
fn steps(run: &Path) -> Vec<(f64, usize)> {
    let text = String::from_utf8(read(&run.join("metrics.csv"))).unwrap();
    text.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>()).map(|f| (f[1].parse().unwrap(), f[3].parse().unwrap())).collect()
}

#[test]
fn two_devices_train_like_one() {
    // Data parallel through burn-train's multi-device strategy: on the CPU backend the two
    // "devices" are two workers on the one CPU device, each with half of every batch. The
    // shards share the step's t, and their losses are weighted so the summed gradient is the
    // whole batch's: losses, draws and weights match the single-device run.
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let one = train(&options(dir.path().join("one"), data.clone(), 4)).unwrap();
    let mut o = options(dir.path().join("two"), data, 4);
    o.devices = 2;
    let two = train(&o).unwrap();
    let (a, b) = (steps(&dir.path().join("one")), steps(&dir.path().join("two")));
    assert_eq!(a.len(), 4);
    assert_eq!(a.iter().map(|s| s.1).collect::<Vec<_>>(), b.iter().map(|s| s.1).collect::<Vec<_>>(), "same t per step");
    let worst = a.iter().zip(&b).map(|(x, y)| (x.0 - y.0).abs()).fold(0.0, f64::max);
    eprintln!("1 vs 2 devices: per-step loss differs by at most {worst:.2e}");
    assert!(worst < 1e-4, "{a:?} vs {b:?}");
    for ((l1, n1, _), (l2, n2, _)) in one.validation.iter().zip(&two.validation) {
        assert_eq!(l1, l2);
        assert!((n1 - n2).abs() < 1e-4, "validation at {l1}: {n1} vs {n2}");
    }
}

#[test]
fn corrupt_checkpoint_and_bad_data_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    train(&options(dir.path().join("run"), data.clone(), 2)).unwrap();
    let ck = dir.path().join("run/checkpoint/optim-1.mpk");
    let bytes = read(&ck);
    std::fs::write(&ck, &bytes[..bytes.len() / 3]).unwrap();
    let mut o = options(dir.path().join("run"), data.clone(), 4);
    o.resume = true;
    let e = train(&o).unwrap_err().to_string();
    assert!(e.contains("optim-1.mpk") && e.contains("corrupt checkpoint"), "{e}");

    let e = train(&options(dir.path().join("x"), dir.path().join("nope.jsonl"), 2)).unwrap_err().to_string();
    assert!(e.contains("nope.jsonl"), "{e}");
    std::fs::write(dir.path().join("tiny.jsonl"), "{\"id\": \"kjv/genesis\", \"text\": \"too short\"}\n").unwrap();
    let e = train(&options(dir.path().join("y"), dir.path().join("tiny.jsonl"), 2)).unwrap_err().to_string();
    assert!(e.contains("training windows"), "{e}");
}
