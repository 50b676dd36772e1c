//! Per-step bookkeeping the learner's metrics do not cover: every micro-batch's loss and
//! sampled t appended to `metrics.csv` (the run's metric log, which survives resumes), and the
//! stop on a non-finite loss, which skips that update and ends the run at once so the last
//! checkpoint stays the last good state. Under data parallelism each device reports its
//! shard; a step's row is written once all shards are in.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::train::Interrupter;

/// Shared by every clone of the model being trained.
#[derive(Clone)]
pub struct StepMonitor {
    interrupter: Interrupter,
    /// Step → (share seen, share-weighted loss) of steps with shards still missing.
    pending: Arc<Mutex<HashMap<usize, (f64, f64)>>>,
    log: Arc<Mutex<Option<std::fs::File>>>,
    non_finite: Arc<Mutex<Option<(usize, f32)>>>,
    path: PathBuf,
}

impl std::fmt::Debug for StepMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepMonitor({})", self.path.display())
    }
}

impl StepMonitor {
    /// Logs to `path`, keeping only its rows before `first_step` (a resumed run rewrites
    /// the steps after its checkpoint).
    pub fn new(interrupter: Interrupter, path: &Path, first_step: usize) -> std::io::Result<Self> {
        let kept: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(',').next().and_then(|s| s.parse::<usize>().ok()).is_some_and(|s| s < first_step))
            .map(str::to_string)
            .collect();
        // Replaced atomically: a crash here must not lose the rows before the checkpoint.
        let mut text = String::from("step,loss,perplexity,t\n");
        for l in kept {
            text.push_str(&l);
            text.push('\n');
        }
        crate::checkpoint::write_durable(path, text.as_bytes()).map_err(|(_, e)| e)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(StepMonitor {
            interrupter,
            pending: Arc::new(Mutex::new(HashMap::new())),
            log: Arc::new(Mutex::new(Some(file))),
            non_finite: Arc::new(Mutex::new(None)),
            path: path.to_path_buf(),
        })
    }

    /// Records a micro-batch (or one device's `share` of it); returns false (and stops the
    /// run) if its loss is not finite.
    pub fn record(&self, step: usize, share: f32, loss: f32, t: Option<usize>) -> bool {
        let complete = self.pending.lock().ok().and_then(|mut p| {
            let e = p.entry(step).or_insert((0.0, 0.0));
            e.0 += share as f64;
            e.1 += share as f64 * loss as f64;
            let (seen, sum) = *e;
            (seen > 1.0 - 1e-4).then(|| {
                p.remove(&step);
                sum / seen
            })
        });
        if let Some(mean) = complete
            && let Ok(mut guard) = self.log.lock()
            && let Some(f) = guard.as_mut()
        {
            let t = t.map(|t| t.to_string()).unwrap_or_default();
            let _ = writeln!(f, "{step},{},{},{t}", mean as f32, mean.exp());
        }
        if loss.is_finite() {
            return true;
        }
        if let Ok(mut nf) = self.non_finite.lock() {
            nf.get_or_insert((step, loss));
        }
        self.interrupter.stop(Some(&format!("non-finite loss {loss} at step {step}")));
        false
    }

    /// The first non-finite loss seen, with its step.
    pub fn non_finite(&self) -> Option<(usize, f32)> {
        self.non_finite.lock().ok().and_then(|g| *g)
    }
}
