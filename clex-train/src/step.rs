//! The CLEX train step (docs/CLEX.md §5): per step one integer t ~ U{t_min..T_max} and the
//! sampled fractional positions spanning [0, t·P), shared by the batch and all layers; θ(t)
//! from the ODE solve as one differentiable node; plain causal LM loss. Validation runs at
//! inference semantics: integer positions and t = ceil(L/P).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use clex_core::clex::{PositionSampler, TrainDraw};
use clex_core::{ClexBackend, training_frequencies};
use clex_models::CausalLm;

use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;

use crate::batch::LmBatch;
use crate::metrics::StepStats;
use crate::monitor::StepMonitor;
use crate::precision::{Precision, autocast, unscale_gradients};

/// Settings of the train step that are not model parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSettings {
    /// Smallest t drawn (1 as in the reference's HEAD; 2 reproduces the paper-era code).
    pub min_factor: usize,
    /// Micro-batches per optimizer step. burn-train sums accumulated gradients, so each
    /// micro-batch's loss is divided by this to make the update the gradient of the mean.
    pub grad_accumulation: usize,
    /// Compute dtype of the forward and backward (the ODE always runs in f32).
    pub precision: Precision,
    /// Mixture-of-experts models: add the router's load-balancing loss times the config's
    /// `router_aux_loss_coef` ([`clex_models::layers::load_balancing_loss`]), as transformers
    /// does with `output_router_logits`. No effect on dense models.
    pub router_aux_loss: bool,
}

impl Default for StepSettings {
    fn default() -> Self {
        StepSettings { min_factor: 1, grad_accumulation: 1, precision: Precision::F32, router_aux_loss: false }
    }
}

/// A causal LM being trained with CLEX (or a baseline rope kind).
#[derive(Module, Debug)]
pub struct ClexLm<B: Backend> {
    /// The model.
    pub lm: CausalLm<B>,
    #[module(skip)]
    settings: StepSettings,
    #[module(skip)]
    monitor: Option<StepMonitor>,
}

/// What a step reports: the loss, the batch shape and the t it drew.
#[derive(Debug, Clone)]
pub struct LmOutput<B: Backend> {
    /// Mean next-token cross-entropy, `[1]`.
    pub loss: Tensor<B, 1>,
    /// The scaling factor of this step (CLEX), if any.
    pub t: Option<usize>,
    /// Sequences in the batch.
    pub rows: usize,
    /// Tokens per sequence.
    pub len: usize,
}

impl<B: Backend> LmOutput<B> {
    fn new(loss: Tensor<B, 1>, t: Option<usize>, batch: &LmBatch<B>) -> Self {
        let [rows, len] = batch.inputs.dims();
        LmOutput { loss, t, rows, len }
    }
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmOutput<burn::backend::Flex>;

    fn sync(self) -> Self::ItemSync {
        let data = self.loss.into_data();
        LmOutput { loss: Tensor::from_data(data.convert::<f32>(), &Default::default()), t: self.t, rows: self.rows, len: self.len }
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for LmOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

impl<B: Backend> Adaptor<StepStats> for LmOutput<B> {
    fn adapt(&self) -> StepStats {
        let loss: f64 = self.loss.clone().into_scalar().elem();
        StepStats { loss, rows: self.rows, len: self.len, t: self.t }
    }
}

impl<B: Backend> ClexLm<B> {
    /// Wraps a model for training.
    pub fn new(lm: CausalLm<B>, settings: StepSettings) -> Self {
        ClexLm { lm, settings, monitor: None }
    }

    /// Attaches per-step logging and the non-finite-loss stop.
    pub fn with_monitor(mut self, monitor: StepMonitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// The t and positions a batch with this key uses (None for non-CLEX models).
    pub fn draw(&self, key: u64, seq_len: usize) -> Option<TrainDraw> {
        let clex = self.lm.clex_layer.as_ref()?;
        let c = clex.config();
        let sampler = PositionSampler::new(seq_len, c.max_position_embeddings, c.params.max_factor, key).ok()?;
        Some(sampler.with_min_factor(self.settings.min_factor).sample())
    }

    fn cross_entropy(logits: Tensor<B, 3>, targets: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 1> {
        let [b, l, v] = logits.dims();
        let logits = match logits.dtype() {
            DType::F32 => logits,
            _ => logits.cast(burn::tensor::FloatDType::F32),
        };
        CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.reshape([b * l, v]), targets.reshape([b * l]))
    }
}

impl<B: ClexBackend> ClexLm<B> {
    /// Validation loss at inference semantics (integer positions, t = ceil(L/P)).
    pub fn eval_loss(&self, batch: &LmBatch<B>) -> Tensor<B, 1> {
        let logits = self.lm.forward(batch.inputs.clone()).expect("validation batch is non-empty");
        Self::cross_entropy(logits, batch.targets.clone())
    }

    /// Training loss: sampled t and fractional positions, differentiable θ(t).
    pub fn train_loss(&self, batch: &LmBatch<B>) -> (Tensor<B, 1>, Option<usize>) {
        let [_, l] = batch.inputs.dims();
        let device = batch.inputs.device();
        // Half precision: a cast copy computes; gradients flow back to the f32 parameters.
        let cast;
        let lm = match self.settings.precision.compute() {
            Some(dtype) => {
                cast = autocast(&self.lm, dtype);
                &cast
            }
            None => &self.lm,
        };
        // θ(t) from the trained model's own CLEX layer (the cast copy keeps it in f32 too).
        let draw = self.draw(batch.key, l);
        let t = draw.as_ref().map(|d| d.t);
        let f = training_frequencies(lm.rope(), self.lm.clex_layer.as_ref(), t, l, &device);
        // CLEX rotates at the drawn fractional positions; baselines at 0..L.
        let positions = draw.map(|d| d.positions).unwrap_or_else(|| (0..l).map(|m| m as f32).collect());
        let (cos, sin) = lm.rotary_tables(positions, 1, f.inv_freq, f.attention_scaling);
        let t = f.scaling_factor.map(|sf| sf.t);
        match lm.config().moe.filter(|_| self.settings.router_aux_loss) {
            Some(moe) => {
                let (logits, router) = lm.forward_rotary_routed(batch.inputs.clone(), cos, sin);
                let loss = Self::cross_entropy(logits, batch.targets.clone());
                let aux = clex_models::layers::load_balancing_loss(&router, moe.experts_per_token).expect("a MoE model has routers");
                (loss + aux.mul_scalar(moe.router_aux_loss_coef), t)
            }
            None => (Self::cross_entropy(lm.forward_rotary(batch.inputs.clone(), cos, sin), batch.targets.clone()), t),
        }
    }
}

impl<B: AutodiffBackend + ClexBackend> TrainStep for ClexLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let (loss, t) = self.train_loss(&batch);
        if let Some(m) = &self.monitor {
            let value: f32 = loss.clone().into_scalar().elem();
            if !m.record(batch.step, batch.share, value, t) {
                // No gradients: the optimizer leaves every parameter as it was.
                return TrainOutput { grads: GradientsParams::new(), item: LmOutput::new(loss.detach(), t, &batch) };
            }
        }
        // Shards and accumulated micro-batches are summed by burn-train: weight each so the
        // sum is the gradient of the whole step's mean loss.
        let weight = batch.share / self.settings.grad_accumulation.max(1) as f32;
        let scale = self.settings.precision.loss_scale();
        let grads = if weight * scale == 1.0 { loss.backward() } else { (loss.clone() * (weight * scale)).backward() };
        if scale == 1.0 {
            return TrainOutput::new(self, grads, LmOutput::new(loss, t, &batch));
        }
        let mut params = GradientsParams::from_grads(grads, self);
        if !unscale_gradients(self, &mut params, scale) {
            // An f16 overflow: skip this update rather than write inf/NaN into the weights.
            eprintln!("[clex-train] step {}: f16 gradients overflowed at loss scale {scale}; update skipped", batch.step);
            params = GradientsParams::new();
        }
        TrainOutput { grads: params, item: LmOutput::new(loss, t, &batch) }
    }
}

impl<B: ClexBackend> InferenceStep for ClexLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        LmOutput::new(self.eval_loss(&batch), None, &batch)
    }
}
