//! Learning rate: linear warmup to the peak, then cosine decay to `min_ratio`·peak at the
//! last step (held there after). Its state is the step counter, checkpointed with the run.

use burn::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// Warmup + cosine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_ratio: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Steps taken.
    pub step: usize,
}

impl WarmupCosine {
    /// The rate at step `s` (0-based).
    pub fn rate(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.peak * (s + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((s - self.warmup) as f64 / span as f64).min(1.0);
        let min = self.peak * self.min_ratio;
        min + (self.peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.rate(self.step);
        self.step += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}
