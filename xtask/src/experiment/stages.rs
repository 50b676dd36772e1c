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

/// Trains `opts` unless an identical finished stage exists. `upstream` is the fingerprint
/// of the stage this one starts from, so retraining stage 1 retrains stage 2.
pub fn run_stage(name: &str, mut opts: TrainOptions, upstream: &str) -> anyhow::Result<StageOutcome> {
    let dir = opts.run_dir.clone();
    opts.resume = false;
    let fingerprint = format!("{opts:?} after [{upstream}]");
    let steps = opts.steps.div_ceil(opts.checkpoint_every) * opts.checkpoint_every;
    let outcome = |wall_s, status, tokens| StageOutcome {
        name: name.to_string(),
        seq_len: opts.seq_len,
        batch_size: opts.batch_size,
        steps,
        wall_s,
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
                    return Ok(outcome(m["wall_s"].as_f64().unwrap_or(f64::NAN), "reused", (tok("train_tokens"), tok("valid_tokens"))));
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
        &json!({"fingerprint": fingerprint, "done": true, "wall_s": wall_s, "train_tokens": report.tokens.0, "valid_tokens": report.tokens.1}),
    )?;
    eprintln!("[experiment] {name}: done in {wall_s:.0} s");
    Ok(outcome(wall_s, status, report.tokens))
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
    use super::validation_trend;

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
