//! Whole runs on a small corpus: a run interrupted after its first checkpoint and resumed
//! ends exactly where the uninterrupted run ends (f32, f16 and bf16 compute), with the metric
//! rows after the checkpoint rewritten by the resumed run; `--init-from` starts from the given
//! model's weights; a non-finite loss stops the run with its last checkpoint intact; 2 devices
//! log the 1-device losses; corrupt checkpoints and bad data paths give errors naming the file.

mod common;

use std::path::{Path, PathBuf};

use clex_train::TrainError;
use clex_train::checkpoint::{latest_checkpoint, verify_checkpoint};
use clex_train::precision::Precision;
use clex_train::trainer::{TrainOptions, TrainReport, train};
use common::{small_corpus, small_run_options as options};

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Copies a run directory (what a crash leaves on disk, before the pieces are removed).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A 4-step run, and a copy of it cut back to what a crash during its second interval leaves
/// (checkpoint 1 only, no model, metric rows of the lost steps that the crashed process wrote
/// but a resume must rewrite) resumed with `--resume`: same weights, validation and metric
/// rows, and the rows after the checkpoint are the resumed run's own.
fn resume_equals_uninterrupted(precision: Precision) -> (PathBuf, TrainReport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let mut o = options(dir.path().join("full"), data, 4);
    o.precision = precision;
    let full = train(&o).unwrap();
    let cut = dir.path().join("cut");
    copy_dir(&dir.path().join("full"), &cut);
    for kind in ["model", "optim", "scheduler"] {
        std::fs::remove_file(cut.join(format!("checkpoint/{kind}-2.mpk"))).unwrap();
    }
    std::fs::remove_dir_all(cut.join("model")).unwrap();
    assert!(cut.join("checkpoint/model-1.mpk").exists());
    // Rows of steps 2 and 3 that the resumed run must replace: marked so that a resume that
    // logs nothing (and keeps them) fails the comparison below.
    let csv = String::from_utf8(read(&cut.join("metrics.csv"))).unwrap();
    let stale: String = csv
        .lines()
        .map(|l| match l.split(',').next().and_then(|s| s.parse::<usize>().ok()) {
            Some(step) if step >= 2 => format!("{step},-1,-1,1\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(cut.join("metrics.csv"), stale).unwrap();
    o.run_dir = cut.clone();
    o.resume = true;
    let resumed = train(&o).unwrap();
    assert_eq!(resumed.steps, 2, "only the missing interval ran");
    let same = read(&full.model_dir.join("model.safetensors")) == read(&resumed.model_dir.join("model.safetensors"));
    assert!(same, "a resumed run must end with the uninterrupted run's weights ({precision:?})");
    assert_eq!(full.validation, resumed.validation);
    // The per-step log: rows 0..=3 in order, each once, those after the checkpoint written by
    // the resumed run and equal to the uninterrupted run's (loss and t).
    let (a, b) = (steps(&dir.path().join("full")), steps(&cut));
    assert_eq!(a.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3], "full run's rows");
    assert_eq!(b.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3], "resumed run's rows");
    assert!(b.iter().all(|r| r.1 > 0.0), "stale rows survived the resume: {b:?}");
    assert_eq!(a, b, "the resumed run logs what the uninterrupted run logged");
    (dir.path().join("full"), full, dir)
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let (full_dir, full, _dir) = resume_equals_uninterrupted(Precision::F32);
    assert!(full.validation.iter().all(|(_, nll, _)| nll.is_finite()));
    let cfg: serde_json::Value = serde_json::from_str(&String::from_utf8(read(&full.model_dir.join("config.json"))).unwrap()).unwrap();
    assert_eq!(cfg["rope_scaling"]["type"], "clex");
    assert!(full.model_dir.join("tokenizer.json").exists());
    let no_tmp =
        std::fs::read_dir(full_dir.join("checkpoint")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(no_tmp, "atomic writes leave no temporary files");
    // t sampled on each step, within 1..=T_max.
    assert!(steps(&full_dir).iter().all(|r| (1..=4).contains(&r.2)));
    let svg = String::from_utf8(read(&full_dir.join("loss.svg"))).unwrap();
    assert!(svg.contains("<polyline") && svg.contains("validation loss at 256"), "{svg}");
    // Every checkpoint validated at L and at 4L: each length's batches are counted only in
    // its own metric (weight 0 in the other).
    for epoch in 1..=2 {
        for (len, rows) in [(64, 2), (256, 1)] {
            let path = full_dir.join(format!("valid/epoch-{epoch}/Loss_at_{len}.log"));
            let log = String::from_utf8(read(&path)).unwrap();
            let counted: usize = log.lines().map(|l| l.split(',').nth(1).unwrap().parse::<usize>().unwrap()).sum();
            assert_eq!(counted, rows, "{}: {log}", path.display());
        }
    }
}

#[test]
fn resume_is_exact_under_f16() {
    resume_equals_uninterrupted(Precision::F16);
}

#[test]
fn resume_is_exact_under_bf16() {
    resume_equals_uninterrupted(Precision::Bf16);
}

#[test]
fn init_from_starts_from_the_given_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let base = train(&options(dir.path().join("base"), data.clone(), 2)).unwrap();
    let mut o = options(dir.path().join("next"), data, 2);
    o.init_from = Some(base.model_dir.clone());
    o.tokenizer = Some(base.model_dir.join("tokenizer.json"));
    o.seed = 7;
    // AdamW at learning rate 0 (no weight decay) changes nothing: the run ends on the weights
    // it started from, which must be the given model's, CLEX layer included, bit for bit.
    o.lr = 0.0;
    let next = train(&o).unwrap();
    let same = read(&base.model_dir.join("model.safetensors")) == read(&next.model_dir.join("model.safetensors"));
    assert!(same, "--init-from: the run must start from the given model's weights");
    assert_eq!(steps(&dir.path().join("next")).len(), 2, "the run took its steps");
}

#[test]
fn non_finite_loss_stops_with_the_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let run = dir.path().join("run");
    train(&options(run.clone(), data.clone(), 2)).unwrap();
    let files = |e: usize| ["model", "optim", "scheduler"].map(|k| read(&run.join(format!("checkpoint/{k}-{e}.mpk"))));
    let kept = files(1);
    // Resumed with an absurd learning rate: step 2 (steps count from 0; checkpoint 1 holds
    // steps 0 and 1) still computes its loss on the checkpoint's weights, its update sends
    // the weights to ~1e30, and step 3's loss overflows.
    let mut o = options(run.clone(), data, 6);
    o.resume = true;
    o.lr = 1e30;
    let e = train(&o).unwrap_err();
    let msg = e.to_string();
    match e {
        TrainError::NonFinite { step, loss, checkpoint } => {
            assert_eq!(step, 3, "the first loss after the blown-up update: {msg}");
            assert!(!loss.is_finite());
            assert_eq!(checkpoint, "checkpoint 1, resume with --resume");
        }
        other => panic!("expected a non-finite-loss stop, got {other}"),
    }
    assert!(msg.contains("non-finite loss") && msg.contains("checkpoint 1"), "{msg}");
    assert_eq!(latest_checkpoint(&run), Some(1), "no checkpoint after the divergence");
    assert!(files(1) == kept, "checkpoint 1 is left as it was");
    verify_checkpoint(&run, 1).unwrap();
}

/// Per-step (step, loss, t) rows of a run's metrics.csv.
fn steps(run: &Path) -> Vec<(usize, f64, usize)> {
    let text = String::from_utf8(read(&run.join("metrics.csv"))).unwrap();
    let rows = text.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>());
    rows.map(|f| (f[0].parse().unwrap(), f[1].parse().unwrap(), f[3].parse().unwrap())).collect()
}

#[test]
fn two_devices_train_like_one() {
    // Data parallel through burn-train's multi-device strategy: on the CPU backend the two
    // "devices" are two workers on the one CPU device, each with half of every batch. The
    // shards share the step's t, and their losses are weighted so the summed gradient is the
    // whole batch's: losses, draws and weights match the single-device run. (The gradients
    // themselves are compared in tests/gradients.rs: AdamW and per-tensor clipping would
    // hide a constant error in the shard weighting from the losses.)
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let one = train(&options(dir.path().join("one"), data.clone(), 4)).unwrap();
    let mut o = options(dir.path().join("two"), data, 4);
    o.devices = 2;
    let two = train(&o).unwrap();
    let (a, b) = (steps(&dir.path().join("one")), steps(&dir.path().join("two")));
    assert_eq!(a.len(), 4);
    let steps_t = |r: &[(usize, f64, usize)]| r.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>();
    assert_eq!(steps_t(&a), steps_t(&b), "same steps, same t per step");
    let worst = a.iter().zip(&b).map(|(x, y)| (x.1 - y.1).abs()).fold(0.0, f64::max);
    eprintln!("1 vs 2 devices: per-step loss differs by at most {worst:.2e}");
    // Measured 3.0e-7 (metrics.csv holds f32 losses, ulp 2.4e-7..4.8e-7 here); 10x margin.
    assert!(worst < 3e-6, "{a:?} vs {b:?}");
    for ((l1, n1, _), (l2, n2, _)) in one.validation.iter().zip(&two.validation) {
        assert_eq!(l1, l2);
        // Measured 4.8e-7 (one f32 ulp at these values); 10x margin.
        assert!((n1 - n2).abs() < 5e-6, "validation at {l1}: {n1} vs {n2}");
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

/// `passkey_fraction` of the training windows are synthetic passkey ones, added to the
/// corpus's; validation is unchanged by them; a fraction outside [0, 1) is refused by name.
#[test]
fn passkey_windows_make_up_the_stated_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    // Windows long enough for the needle and question under this small vocabulary.
    let long = |run: &str| TrainOptions { seq_len: 160, ..options(dir.path().join(run), data.clone(), 2) };
    let plain = train(&long("plain")).unwrap();
    let mut o = long("mixed");
    o.passkey_fraction = 0.2;
    let mixed = train(&o).unwrap();
    assert_eq!(mixed.windows.0, plain.windows.0, "the corpus's windows are all kept");
    assert!(plain.windows.0 > 50 && plain.windows.1 == 0, "{:?}", plain.windows);
    let share = mixed.windows.1 as f64 / (mixed.windows.0 + mixed.windows.1) as f64;
    assert!((share - 0.2).abs() < 0.5 / mixed.windows.0 as f64 + 1e-9, "{:?}: {share}", mixed.windows);
    let at = |r: &TrainReport| r.validation.iter().map(|v| v.2).collect::<Vec<_>>();
    assert_eq!(at(&mixed), at(&plain), "the same validation windows");
    o.passkey_fraction = 1.0;
    o.run_dir = dir.path().join("all");
    let e = train(&o).unwrap_err().to_string();
    assert!(e.contains("passkey fraction 1"), "{e}");
}
