//! burn-train metrics of a language-model step: loss and perplexity (optionally only for
//! batches of one sequence length, so one validation pass reports L and 4L side by side),
//! tokens per second, and the CLEX scaling factor t drawn for the step.

use std::sync::Arc;
use std::time::Instant;

use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};

/// What every metric here reads from a step's output.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Mean next-token cross-entropy of the batch.
    pub loss: f64,
    /// Sequences in the batch.
    pub rows: usize,
    /// Tokens per sequence.
    pub len: usize,
    /// CLEX t drawn for the step (training only).
    pub t: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Loss,
    Perplexity,
    TokensPerSecond,
    ScalingFactor,
}

/// One numeric metric over [`StepStats`].
#[derive(Clone)]
pub struct LmMetric {
    kind: Kind,
    /// Only batches of this sequence length count (others are logged with weight 0).
    len: Option<usize>,
    name: MetricName,
    sum: f64,
    count: usize,
    current: f64,
    clock: Option<Instant>,
    tokens: usize,
}

impl LmMetric {
    fn new(kind: Kind, len: Option<usize>) -> Self {
        let base = match kind {
            Kind::Loss => "Loss",
            Kind::Perplexity => "Perplexity",
            Kind::TokensPerSecond => "Tokens per second",
            Kind::ScalingFactor => "CLEX t",
        };
        let name = match len {
            Some(l) => format!("{base} at {l}"),
            None => base.to_string(),
        };
        LmMetric { kind, len, name: Arc::new(name), sum: 0.0, count: 0, current: 0.0, clock: None, tokens: 0 }
    }

    /// Mean loss (of batches of length `len` only, when given).
    pub fn loss(len: Option<usize>) -> Self {
        Self::new(Kind::Loss, len)
    }

    /// exp(mean loss) (of batches of length `len` only, when given).
    pub fn perplexity(len: Option<usize>) -> Self {
        Self::new(Kind::Perplexity, len)
    }

    /// Tokens processed per second of wall time since the epoch's first batch.
    pub fn tokens_per_second() -> Self {
        Self::new(Kind::TokensPerSecond, None)
    }

    /// The CLEX scaling factor drawn for each step.
    pub fn scaling_factor() -> Self {
        Self::new(Kind::ScalingFactor, None)
    }

    /// Perplexity is exp of the mean loss, not the mean of per-batch perplexities.
    fn shown(&self, v: f64) -> f64 {
        if self.kind == Kind::Perplexity { v.exp() } else { v }
    }

    fn running(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.shown(self.sum / self.count as f64) }
    }
}

impl Metric for LmMetric {
    type Input = StepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        let unit = (self.kind == Kind::TokensPerSecond).then(|| "tok/s".to_string());
        NumericAttributes { unit, higher_is_better: self.kind == Kind::TokensPerSecond }.into()
    }

    fn update(&mut self, item: &StepStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let value = match self.kind {
            _ if self.len.is_some_and(|l| l != item.len) => None,
            Kind::Loss | Kind::Perplexity => Some(item.loss),
            Kind::TokensPerSecond => {
                // Tokens after the first batch over the time since it was reported: robust to
                // several devices reporting their shards of one step back to back.
                let now = Instant::now();
                match self.clock {
                    Some(t0) => {
                        self.tokens += item.rows * item.len;
                        Some(self.tokens as f64 / now.duration_since(t0).as_secs_f64().max(1e-9))
                    }
                    None => {
                        self.clock = Some(now);
                        None
                    }
                }
            }
            Kind::ScalingFactor => item.t.map(|t| t as f64),
        };
        // Batches that do not count (another length, the first unclocked batch, no t) are
        // logged with weight 0 and a finite value, so burn-train's count-weighted epoch mean
        // ignores them.
        let weight = if value.is_some() { item.rows } else { 0 };
        if let Some(v) = value {
            self.sum += v * weight as f64;
            self.count += weight;
            self.current = v;
        }
        let current = self.shown(self.current);
        let precision = match self.kind {
            Kind::TokensPerSecond => 0,
            Kind::Perplexity | Kind::ScalingFactor => 2,
            Kind::Loss => 4,
        };
        let unit = if self.kind == Kind::TokensPerSecond { " tok/s" } else { "" };
        let formatted = format!("epoch {:.precision$}{unit} - batch {current:.precision$}{unit}", self.running());
        let logged = if current.is_finite() { current } else { 0.0 };
        SerializedEntry::new(formatted, NumericEntry::Aggregated { aggregated_value: logged, count: weight }.serialize())
    }

    fn clear(&mut self) {
        self.sum = 0.0;
        self.count = 0;
        self.current = 0.0;
        self.clock = None;
        self.tokens = 0;
    }
}

impl Numeric for LmMetric {
    fn value(&self) -> NumericEntry {
        NumericEntry::Aggregated { aggregated_value: self.shown(self.current), count: 1 }
    }

    fn running_value(&self) -> NumericEntry {
        NumericEntry::Aggregated { aggregated_value: self.running(), count: self.count }
    }
}
