//! Two learning rates in one AdamW (`--clex-lr`, issue 19): CLEX's ODE parameters (U and D
//! of `lm.clex_layer`) step at `clex_lr / lr` times the scheduled rate, every other weight at
//! the scheduled rate, so both follow the same warmup-cosine shape. The reference trains U
//! and D in one group with the rest; that is [`OdeLrGroups`] without a ratio, which steps
//! exactly as the plain AdamW does.
//!
//! One burn `OptimizerAdaptor` serves both groups, stepped once per group on disjoint
//! gradients: the adaptor steps only the parameters that have a gradient and leaves the
//! others as they are, without weight decay and without creating state
//! (`burn-optim-0.21.0/src/optim/simple/adaptor.rs`, `SimpleOptimizerMapper::map_float`);
//! AdamW's state (its step count included) is per parameter and the clip is per tensor
//! (`optim/adamw.rs`, `grad_clipping/base.rs`). So the two passes are two parameter groups,
//! and the state stays one map keyed by `ParamId`: checkpoints keep today's record type and
//! a resume continues both groups exactly. Weight decay is decoupled and scaled by each
//! group's rate, as in PyTorch's parameter groups.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;

use crate::TrainError;
use crate::step::ClexLm;
use crate::trainer::TrainOptions;

/// The run's AdamW with the ODE's own learning rate: U and D at `ratio` times the scheduled
/// rate, the rest at the scheduled rate; without a ratio, one group.
pub struct OdeLrGroups<B: AutodiffBackend> {
    adamw: OptimizerAdaptor<AdamW, ClexLm<B>, B>,
    /// `clex_lr / lr`; `None`: one group, one pass.
    ratio: Option<f64>,
}

// By hand: a derive would ask `B: Clone` of the backend marker type.
impl<B: AutodiffBackend> Clone for OdeLrGroups<B> {
    fn clone(&self) -> Self {
        OdeLrGroups { adamw: self.adamw.clone(), ratio: self.ratio }
    }
}

impl<B: AutodiffBackend> OdeLrGroups<B> {
    /// `adamw` (the run's [`crate::trainer::optimizer`]) with U and D stepped at `ratio` times
    /// the rate the scheduler hands over; `None` steps every parameter at that rate.
    pub fn new(adamw: OptimizerAdaptor<AdamW, ClexLm<B>, B>, ratio: Option<f64>) -> Self {
        OdeLrGroups { adamw, ratio }
    }

    /// The multiple of the scheduled rate U and D step at (`None`: one group).
    pub fn ratio(&self) -> Option<f64> {
        self.ratio
    }
}

/// The ODE's rate as a multiple of the scheduled rate for a run's options: `clex_lr / lr`, or
/// `None` without `clex_lr`. It follows the schedule of `lr`, so it needs `lr > 0`; `clex_lr`
/// must be a finite number > 0. Errors name the flags.
pub fn ode_lr_ratio(opts: &TrainOptions) -> Result<Option<f64>, TrainError> {
    let Some(clex_lr) = opts.clex_lr else { return Ok(None) };
    if !(clex_lr.is_finite() && clex_lr > 0.0) {
        return Err(TrainError::NotEnoughData(format!("--clex-lr {clex_lr}: must be a number > 0")));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(TrainError::NotEnoughData(format!(
            "--clex-lr {clex_lr} with --lr {}: the ODE's rate follows the schedule of --lr, which must be > 0",
            opts.lr
        )));
    }
    Ok(Some(clex_lr / opts.lr))
}

/// Moves the gradients of U and D out of `grads` into a set of their own (empty for a model
/// without a CLEX layer, or a step without an ODE gradient).
fn take_ode_grads<B: AutodiffBackend>(model: &ClexLm<B>, grads: &mut GradientsParams) -> GradientsParams {
    let mut ode = GradientsParams::new();
    if let Some(layer) = &model.lm.clex_layer {
        // θ(1) (`inv_freq`) is frozen and has no gradient; U and D are the ODE's parameters.
        for param in [layer.up(), layer.down()] {
            // Gradients are held on the inner backend (burn-optim's GradientsParamsConverter).
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(param.id) {
                ode.register::<B::InnerBackend, 2>(param.id, g);
            }
        }
    }
    ode
}

impl<B: AutodiffBackend> Optimizer<ClexLm<B>, B> for OdeLrGroups<B> {
    type Record = <OptimizerAdaptor<AdamW, ClexLm<B>, B> as Optimizer<ClexLm<B>, B>>::Record;

    fn step(&mut self, lr: f64, module: ClexLm<B>, mut grads: GradientsParams) -> ClexLm<B> {
        let Some(ratio) = self.ratio else { return self.adamw.step(lr, module, grads) };
        let ode = take_ode_grads(&module, &mut grads);
        let module = self.adamw.step(lr, module, grads);
        self.adamw.step(lr * ratio, module, ode)
    }

    fn step_multi(&mut self, lr: f64, module: ClexLm<B>, mut grads: MultiGradientsParams) -> ClexLm<B> {
        let Some(ratio) = self.ratio else { return self.adamw.step_multi(lr, module, grads) };
        // Each device's share keeps its device: burn sums the shares of a parameter later.
        let mut ode = MultiGradientsParams::default();
        for (device_grads, device) in grads.grads.iter_mut() {
            ode.grads.push((take_ode_grads(&module, device_grads), *device));
        }
        let module = self.adamw.step_multi(lr, module, grads);
        self.adamw.step_multi(lr * ratio, module, ode)
    }

    fn to_record(&self) -> Self::Record {
        self.adamw.to_record()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.adamw = self.adamw.load_record(record);
        self
    }
}
