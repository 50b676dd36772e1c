//! One training stage of the experiment, restartable: a finished stage with the same
//! settings is reused, an unfinished one resumes from its last checkpoint, a stage whose
//! settings changed is trained again from scratch.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use clex_train::trainer::{TrainOptions, train};
use serde_json::{Value, json};

/// Written into each stage directory; its presence marks the directory as ours.
const MARKER: &str = "experiment-stage.json";

/// What a stage did.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    /// Directory name (`stage1`, `stage2-clex`, ...).
    pub name: String,
    /// Training length of the stage.
    pub seq_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches of the whole stage.
    pub steps: usize,
    /// Wall time of the training (of the run that finished it, when reused).
    pub wall_s: f64,
    /// Compute threads of the process that trained it (0: not recorded).
    pub threads: usize,
    /// trained | resumed | reused.
    pub status: &'static str,
    /// Train and validation tokens of the corpus under the stage's tokenizer.
    pub tokens: (usize, usize),
    /// Settings and upstream, as compared on reuse.
    pub fingerprint: String,
}

fn read_marker(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(MARKER)).ok()?).ok()
}

fn write_marker(dir: &Path, v: &Value) -> anyhow::Result<()> {
    clex_models::write_atomic(&dir.join(MARKER), serde_json::to_string_pretty(v)?.as_bytes())?;
    Ok(())
}

/// The settings fingerprint of the finished stage in `dir` (`None`: not a finished stage).
pub fn finished_fingerprint(dir: &Path) -> Option<String> {
    let m = read_marker(dir)?;
    if m["done"] != true {
        return None;
    }
    m["fingerprint"].as_str().map(str::to_string)
}

/// Removes `dir` when an earlier run of this command made it (`--fresh`); refuses to
/// touch a directory it did not make.
pub fn remove_stage(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if read_marker(dir).is_none() {
        bail!("{} exists but was not made by `cargo xtask experiment` (no {MARKER}); remove it or pass another --out-dir", dir.display());
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Directory name of stage 1 (pretraining); stage 2's names come from the experiment's runs.
pub const STAGE1: &str = "stage1";

/// Directory name of stage 1's retrieval phase, the model every stage-2 run starts from.
pub const RETRIEVAL: &str = "stage1-retrieval";

/// `--fresh`: removes the directories of every stage of this experiment under `out_dir`,
/// stage 1, its retrieval phase and each of `stage2`, so all are trained again. Anything else there (the quick
/// corpus, a report, a stage of other settings) is left; a stage directory this command did
/// not make is refused, as by [`remove_stage`].
pub fn fresh<'a>(out_dir: &Path, stage2: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
    for name in [STAGE1, RETRIEVAL].into_iter().chain(stage2) {
        remove_stage(&out_dir.join(name))?;
    }
    Ok(())
}

/// Trains `opts` unless an identical finished stage exists. `upstream` is the fingerprint
/// of the stage this one starts from, so retraining stage 1 retrains stage 2.
pub fn run_stage(name: &str, mut opts: TrainOptions, upstream: &str) -> anyhow::Result<StageOutcome> {
    let dir = opts.run_dir.clone();
    opts.resume = false;
    let fingerprint = format!("{opts:?} after [{upstream}]");
    let steps = opts.steps.div_ceil(opts.checkpoint_every) * opts.checkpoint_every;
    let outcome = |wall_s, threads, status, tokens| StageOutcome {
        name: name.to_string(),
        seq_len: opts.seq_len,
        batch_size: opts.batch_size,
        steps,
        wall_s,
        threads,
        status,
        tokens,
        fingerprint: fingerprint.clone(),
    };
    let mut status = "trained";
    if dir.exists() {
        match read_marker(&dir) {
            Some(m) if m["fingerprint"] == fingerprint.as_str() => {
                if m["done"] == true {
                    eprintln!("[experiment] {name}: reusing the finished stage in {}", dir.display());
                    let tok = |k: &str| m[k].as_u64().unwrap_or(0) as usize;
                    return Ok(outcome(
                        m["wall_s"].as_f64().unwrap_or(f64::NAN),
                        tok("threads"),
                        "reused",
                        (tok("train_tokens"), tok("valid_tokens")),
                    ));
                }
                eprintln!("[experiment] {name}: resuming the unfinished stage in {}", dir.display());
                opts.resume = true;
                status = "resumed";
            }
            Some(_) => {
                eprintln!("[experiment] {name}: settings changed since {} was made; training it again", dir.display());
                remove_stage(&dir)?;
            }
            None => remove_stage(&dir)?, // refuses with a message
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_marker(&dir, &json!({"fingerprint": fingerprint, "done": false}))?;
    eprintln!("[experiment] {name}: training {steps} micro-batches of {} × {} tokens, rope {:?}", opts.batch_size, opts.seq_len, opts.rope);
    let t0 = Instant::now();
    let report = train(&opts).with_context(|| format!("stage {name}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    write_marker(
        &dir,
        &json!({
            "fingerprint": fingerprint, "done": true, "wall_s": wall_s, "threads": compute_threads(),
            "train_tokens": report.tokens.0, "valid_tokens": report.tokens.1,
        }),
    )?;
    eprintln!("[experiment] {name}: done in {wall_s:.0} s");
    Ok(outcome(wall_s, compute_threads(), status, report.tokens))
}

/// Threads burn-flex computes on: rayon's global pool, sized by `RAYON_NUM_THREADS` or the
/// CPUs (stages run side by side in separate processes take fewer each).
pub fn compute_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

/// The trainer's own validation at L and 4L after each checkpoint of a stage, from burn-train's
/// metric logs (`valid/epoch-N/Loss_at_{L}.log`, lines `value,weight`; weight-0 lines belong
/// to the other length): (micro-batches so far, mean NLL at L, mean NLL at 4L).
pub fn validation_trend(dir: &Path, seq_len: usize, checkpoint_every: usize) -> Vec<(usize, f64, f64)> {
    let mean = |epoch: usize, len: usize| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(format!("valid/epoch-{epoch}/Loss_at_{len}.log"))).ok()?;
        let (mut sum, mut weight) = (0.0, 0.0);
        for line in text.lines() {
            let (v, w) = line.split_once(',')?;
            let (v, w): (f64, f64) = (v.trim().parse().ok()?, w.trim().parse().ok()?);
            sum += v * w;
            weight += w;
        }
        (weight > 0.0).then(|| sum / weight)
    };
    (1..).map_while(|e| Some((e * checkpoint_every, mean(e, seq_len)?, mean(e, 4 * seq_len)?))).collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clex_train::preset::RopeChoice;
    use clex_train::trainer::TrainOptions;

    use super::{RETRIEVAL, STAGE1, remove_stage, run_stage, validation_trend};

    /// 4 tiny micro-batches on a few KB of the bundled corpus, checkpoints every 2.
    fn tiny(run_dir: PathBuf, dir: &Path) -> TrainOptions {
        let docs = clex_eval::corpus::read_documents(&clex_eval::corpus::bundled_corpus_path()).unwrap();
        let mut lines = String::new();
        // "kjv/ruth" hashes to validation, the others to train.
        for (i, id) in ["kjv/genesis", "kjv/exodus", "kjv/ruth", "kjv/numbers"].iter().enumerate() {
            lines.push_str(&serde_json::json!({"id": id, "text": &docs[0].text[i * 12_000..(i + 1) * 12_000]}).to_string());
            lines.push('\n');
        }
        let data = dir.join("small.jsonl");
        std::fs::write(&data, lines).unwrap();
        let mut o = TrainOptions::tiny(run_dir);
        o.data = data;
        o.vocab_size = 300;
        o.seq_len = 64;
        o.batch_size = 2;
        o.steps = 4;
        o.checkpoint_every = 2;
        o.warmup = 2;
        o.valid_windows = 1;
        o.rope = RopeChoice::Clex { max_factor: 4 };
        o.plain_progress = true;
        o
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn stages_are_reused_resumed_retrained_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage1");
        let o = tiny(stage.clone(), dir.path());
        let weights = stage.join("model/model.safetensors");
        let metrics = stage.join("metrics.csv");

        let first = run_stage("stage1", o.clone(), "").unwrap();
        assert_eq!(first.status, "trained");
        let trained = std::fs::read(&weights).unwrap();

        // Finished, same settings: reused, not retrained. A retrain would rewrite metrics.csv.
        std::fs::write(&metrics, "sentinel").unwrap();
        let again = run_stage("stage1", o.clone(), "").unwrap();
        assert_eq!((again.status, again.tokens), ("reused", first.tokens));
        assert_eq!(read(&metrics), "sentinel", "a reused stage is not trained again");

        // Killed during its second interval: the marker still says unfinished, checkpoint 2
        // and the model are missing. It resumes after checkpoint 1 (keeping the rows before
        // it, which a retrain would rewrite) and ends on the same weights.
        std::fs::write(&metrics, "step,loss,perplexity,t\n0,-7,-7,1\n1,-7,-7,1\n2,-7,-7,1\n").unwrap();
        for kind in ["model", "optim", "scheduler"] {
            std::fs::remove_file(stage.join(format!("checkpoint/{kind}-2.mpk"))).unwrap();
        }
        std::fs::remove_dir_all(stage.join("model")).unwrap();
        let marker = stage.join(super::MARKER);
        let unfinished = read(&marker).replace("\"done\": true", "\"done\": false");
        assert!(unfinished.contains("\"done\": false"), "{unfinished}");
        std::fs::write(&marker, unfinished).unwrap();
        let resumed = run_stage("stage1", o.clone(), "").unwrap();
        assert_eq!(resumed.status, "resumed");
        let rows: Vec<String> = read(&metrics).lines().skip(1).map(str::to_string).collect();
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(rows[..2].iter().all(|r| r.ends_with(",-7,-7,1")), "rows before the checkpoint are kept: {rows:?}");
        // A real cross-entropy is positive and finite; the planted rows hold -7.
        let loss = |r: &str| r.split(',').nth(1).and_then(|v| v.parse::<f64>().ok());
        let fresh_rows = rows[2..].iter().all(|r| loss(r).is_some_and(|l| l.is_finite() && l > 0.0));
        assert!(fresh_rows, "rows after it are the resumed run's: {rows:?}");
        assert!(std::fs::read(&weights).unwrap() == trained, "the resumed stage ends on the uninterrupted weights");

        // Settings changed (or the upstream stage retrained): trained again from scratch.
        std::fs::write(stage.join("leftover"), "").unwrap();
        let mut changed = o.clone();
        changed.steps = 2;
        let retrained = run_stage("stage1", changed.clone(), "").unwrap();
        assert_eq!(retrained.status, "trained");
        assert!(!stage.join("leftover").exists(), "the old stage directory was removed");
        let upstream = run_stage("stage1", changed.clone(), "stage 0 changed").unwrap();
        assert_eq!(upstream.status, "trained", "a new upstream fingerprint retrains");

        // --fresh removes every stage directory the experiment made; a finished stage then
        // trains again. A directory it did not make is refused, and left alone.
        remove_stage(&stage).unwrap();
        assert!(!stage.exists());
        assert_eq!(run_stage("stage1", changed, "stage 0 changed").unwrap().status, "trained");
        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        let e = remove_stage(&foreign).unwrap_err().to_string();
        assert!(e.contains("was not made by `cargo xtask experiment`"), "{e}");
        assert!(foreign.exists());
    }

    #[test]
    fn fresh_removes_every_stage_of_the_experiment_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // The experiment's own stage list, both regimes.
        let args = crate::experiment::ExperimentArgs {
            quick: true,
            backend: None,
            out_dir: None,
            out: None,
            regime: crate::experiment::Regime::Both,
            fresh: true,
            stage1_steps: None,
            retrieval_steps: None,
            stage2_steps: None,
            regions: None,
        };
        let runs = crate::experiment::stage2_runs(&crate::experiment::Settings::new(&args));
        let ours: Vec<&str> = [STAGE1, RETRIEVAL].into_iter().chain(runs.iter().map(|r| r.dir)).collect();
        assert_eq!(ours.len(), 11, "stage 1, its retrieval phase, four stage-2 runs at P and five at 4P: {ours:?}");
        let stage = |name: &str| {
            let d = out.join(name);
            std::fs::create_dir_all(d.join("checkpoint")).unwrap();
            super::write_marker(&d, &serde_json::json!({"fingerprint": name, "done": true})).unwrap();
            std::fs::write(d.join("metrics.csv"), "step,loss\n").unwrap();
        };
        for name in &ours {
            stage(name);
        }
        // What else lives in the run directory: the quick corpus, a report written there, and
        // a stage directory of an earlier version's method (marked, but not one of ours).
        std::fs::write(out.join("corpus-quick.jsonl"), "{}\n").unwrap();
        std::fs::write(out.join("EXTRAPOLATION.md"), "report").unwrap();
        stage("stage2-old");

        super::fresh(out, runs.iter().map(|r| r.dir)).unwrap();
        for name in &ours {
            assert!(!out.join(name).exists(), "--fresh removes {name}");
        }
        let mut left: Vec<String> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["EXTRAPOLATION.md", "corpus-quick.jsonl", "stage2-old"], "--fresh leaves everything else");
        assert!(out.join("stage2-old/metrics.csv").exists());
        // Again, with the stages gone: nothing to do, no error.
        super::fresh(out, runs.iter().map(|r| r.dir)).unwrap();
    }

    #[test]
    fn trend_reads_weighted_means_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        for (e, l, l4) in [(1, "0,0\n4.0,8\n5.0,8\n", "6.0,2\n0,0\n"), (2, "3.0,16\n", "3.5,1\n4.5,1\n")] {
            let d = dir.path().join(format!("valid/epoch-{e}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("Loss_at_128.log"), l).unwrap();
            std::fs::write(d.join("Loss_at_512.log"), l4).unwrap();
        }
        assert_eq!(validation_trend(dir.path(), 128, 500), vec![(500, 4.5, 6.0), (1000, 3.0, 4.0)]);
        assert!(validation_trend(&dir.path().join("none"), 128, 500).is_empty());
    }
}
