//! What a bench worker measured and how a sample is summarised: the types the worker writes
//! (one `BENCH_RESULT` JSON line) and the report reads, in one place so that neither imports
//! the other.

use serde::{Deserialize, Serialize};

/// Cached decode steps ending at one context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodePoint {
    /// Tokens in the cache after the last step.
    pub context: usize,
    /// Wall time of each step, ms.
    pub step_ms: Vec<f64>,
    /// The step from `context` to `context + 1`, ms.
    pub next_ms: f64,
}

/// What an inference worker measured (the torch script prints the same fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResult {
    /// `clex-rs` or `transformers`.
    pub engine: String,
    /// Prompt tokens of the prefill.
    pub prefill_tokens: usize,
    /// Its wall time, s: the median of the timed prefills.
    pub prefill_s: f64,
    /// Every timed prefill, s.
    #[serde(default)]
    pub prefill_runs: Vec<f64>,
    /// The decode ladder.
    pub decode: Vec<DecodePoint>,
    /// Bytes of the KV cache at the end of the ladder (ours only).
    #[serde(default)]
    pub cache_bytes: Option<u64>,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Parameters.
    pub params: u64,
    /// Bytes of weights one decode step must read: every parameter but the input
    /// embedding table (one row of it is read), f32.
    pub decode_weight_bytes: u64,
    /// Versions (torch script) or backend (ours).
    #[serde(default)]
    pub versions: String,
}

/// One long-context configuration (`bench --long`): a prefill of the whole prompt, then
/// greedy decode steps after it. The torch script (`bench/torch_long.py`) prints the same
/// fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LongResult {
    /// `clex-rs`, `clex-rs CLEX`, `transformers eager` or `transformers sdpa`.
    pub engine: String,
    /// Prompt tokens, all in one prefill.
    pub context: usize,
    /// Wall time of the prefill, s (the last row of logits read back).
    pub prefill_s: f64,
    /// Wall time of each greedy decode step after it, ms.
    pub step_ms: Vec<f64>,
    /// The greedy tokens, in order (the first is the prefill's argmax).
    pub generated: Vec<u32>,
    /// Bytes of the KV cache after the last step (ours only).
    #[serde(default)]
    pub cache_bytes: Option<u64>,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Parameters.
    pub params: u64,
    /// Bytes of weights one decode step must read (see [`InferResult::decode_weight_bytes`]).
    pub decode_weight_bytes: u64,
    /// Versions (torch script) or backend (ours).
    #[serde(default)]
    pub versions: String,
}

impl LongResult {
    /// Prompt tokens per second of the prefill.
    pub fn prefill_tps(&self) -> f64 {
        self.context as f64 / self.prefill_s
    }

    /// Decode tokens per second: 1000 / the median step.
    pub fn decode_tps(&self) -> f64 {
        1e3 / median_of(&self.step_ms)
    }
}

/// What became of one launched (or refused) long-context configuration.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// It ran.
    Done(T),
    /// It did not fit: refused by the memory estimate before launch, stopped by the
    /// parent's memory watchdog, killed by the kernel or failed to allocate; says which.
    OutOfMemory(String),
    /// It failed otherwise (the end of its error output): recorded so that one broken
    /// configuration does not lose a long run's other results; the command fails at the end.
    Failed(String),
}

impl<T> Outcome<T> {
    /// The result, if it ran.
    pub fn done(&self) -> Option<&T> {
        match self {
            Outcome::Done(r) => Some(r),
            _ => None,
        }
    }

    /// Why it did not run: ("out of memory" | "failed", the reason); None if it ran.
    pub fn why_not(&self) -> Option<(&'static str, &str)> {
        match self {
            Outcome::Done(_) => None,
            Outcome::OutOfMemory(why) => Some(("out of memory", why)),
            Outcome::Failed(why) => Some(("failed", why)),
        }
    }
}

/// What a training worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainResult {
    /// Tokens per step (batch × length).
    pub tokens_per_step: usize,
    /// Wall time of each timed step (forward, backward, AdamW update), s.
    pub step_s: Vec<f64>,
    /// CLEX: the t each timed step drew.
    pub t: Vec<usize>,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
}

/// Median and range of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The median, minimum and maximum of the finite values; None when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1] })
    }

    /// `median (min–max)` with `digits` decimals; just the median for one run.
    pub fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", digits, self.median)
        } else {
            format!("{:.*} ({:.*}–{:.*})", digits, self.median, digits, self.min, digits, self.max)
        }
    }

    /// As a signed percentage of a ratio − 1.
    pub fn show_pct(&self) -> String {
        let p = |x: f64| format!("{:+.1}%", (x - 1.0) * 100.0);
        if self.min == self.max { p(self.median) } else { format!("{} ({} to {})", p(self.median), p(self.min), p(self.max)) }
    }
}

/// The median of the finite values, NaN when there are none.
pub fn median_of(v: &[f64]) -> f64 {
    Spread::of(v).map(|s| s.median).unwrap_or(f64::NAN)
}
