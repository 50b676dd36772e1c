//! Plain progress lines for burn-train (one line every few iterations and one per
//! validation), instead of burn's debug dump when no TUI is compiled in.

use std::collections::HashMap;
use std::time::Instant;

use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining, ProgressType,
    TrainingProgress,
};

/// Prints `[train] epoch 2/4 step 150/400 | Loss 4.61 | Learning Rate 2.4e-3 | ...`.
pub struct PlainRenderer {
    names: HashMap<MetricId, String>,
    latest: Vec<(MetricId, String)>,
    valid: Vec<(MetricId, String)>,
    every: usize,
    steps_per_epoch: usize,
    /// burn-train counts one iteration per device and step.
    devices: usize,
    start: Instant,
}

impl PlainRenderer {
    /// A line every `every` steps; `steps_per_epoch` turns epochs into global steps.
    pub fn new(every: usize, steps_per_epoch: usize, devices: usize) -> Self {
        PlainRenderer {
            names: HashMap::new(),
            latest: Vec::new(),
            valid: Vec::new(),
            every: every.max(1),
            steps_per_epoch,
            devices: devices.max(1),
            start: Instant::now(),
        }
    }

    fn set(list: &mut Vec<(MetricId, String)>, state: MetricState) {
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let text = entry.serialized_entry.formatted.clone();
        match list.iter_mut().find(|(id, _)| *id == entry.metric_id) {
            Some(slot) => slot.1 = text,
            None => list.push((entry.metric_id, text)),
        }
    }

    fn line(&self, list: &[(MetricId, String)]) -> String {
        list.iter().map(|(id, v)| format!("{} {v}", self.names.get(id).map(String::as_str).unwrap_or("?"))).collect::<Vec<_>>().join(" | ")
    }
}

impl MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: MetricState) {
        Self::set(&mut self.latest, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::set(&mut self.valid, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        let it = item.iteration.unwrap_or(0);
        if !it.is_multiple_of(self.devices) {
            return;
        }
        let it = it / self.devices;
        if it.is_multiple_of(self.every) || item.progress.as_ref().is_some_and(|p| p.items_processed >= p.items_total) {
            let epoch = item.global_progress.items_processed;
            let step = (epoch.saturating_sub(1)) * self.steps_per_epoch + it;
            let total = item.global_progress.items_total * self.steps_per_epoch;
            eprintln!("[train] step {step}/{total} ({:.0} s) | {}", self.start.elapsed().as_secs_f64(), self.line(&self.latest));
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _progress: Vec<ProgressType>) {
        if item.progress.as_ref().is_some_and(|p| p.items_processed >= p.items_total) {
            eprintln!("[valid] after epoch {} | {}", item.global_progress.items_processed, self.line(&self.valid));
        }
    }
}

impl MetricsRendererEvaluation for PlainRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _progress: Vec<ProgressType>) {}
}

impl MetricsRenderer for PlainRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
