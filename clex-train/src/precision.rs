//! Mixed-precision training: f32 master weights and optimizer state, f16/bf16 compute.
//!
//! Each step casts the model's float parameters to the compute dtype through burn's
//! differentiable cast, so the forward and backward run in half precision while the gradients
//! arrive at the f32 parameters. The CLEX layer is never cast: docs/CLEX.md §3.5 keeps the ODE (its
//! parameters, the RK4 solve and θ) in f32. Cross-entropy and the attention softmax run in f32
//! already (`ClexLm::cross_entropy`, `clex_models::attention`).
//!
//! f16's exponent range is too narrow for small gradients, so f16 uses a static loss scale;
//! bf16 has f32's range and needs none.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, ElementConversion, FloatDType, Tensor};
use clex_models::CausalLm;

/// The loss scale of f16 training: gradients of order 1e-8..1e-4 (typical here) are lifted
/// out of f16's subnormal range, and the largest seen stay far below its 65504 limit.
pub const F16_LOSS_SCALE: f32 = 1024.0;

/// How a training step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// f16 compute, f32 master weights, static loss scale.
    F16,
    /// bf16 compute, f32 master weights.
    Bf16,
}

impl Precision {
    /// Parses `f32` / `f16` / `bf16`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Precision::F32),
            "f16" => Some(Precision::F16),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    /// The compute dtype, or None for plain f32.
    pub fn compute(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(FloatDType::F16),
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// The factor the loss is multiplied by before backward.
    pub fn loss_scale(self) -> f32 {
        if self == Precision::F16 { F16_LOSS_SCALE } else { 1.0 }
    }

    /// As written in logs and configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Casts float parameters outside the CLEX layer.
struct Cast {
    dtype: FloatDType,
    /// Depth inside `clex_layer` (0: outside).
    in_clex: usize,
}

impl<B: Backend> ModuleMapper<B> for Cast {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        if self.in_clex > 0 || name == "clex_layer" {
            self.in_clex += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.in_clex = self.in_clex.saturating_sub(1);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.in_clex == 0 && tensor.dtype() == DType::F32 { tensor.cast(self.dtype) } else { tensor };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The model with its parameters (CLEX layer excepted) cast to `dtype`. Under autodiff the
/// cast is part of the graph: gradients of the result land on `lm`'s f32 parameters.
pub fn autocast<B: Backend>(lm: &CausalLm<B>, dtype: FloatDType) -> CausalLm<B> {
    lm.clone().map(&mut Cast { dtype, in_clex: 0 })
}

/// Divides every gradient of `module` by `scale` and reports whether all are finite.
struct Unscale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    inv_scale: f32,
    /// Σ g² over all gradients, one device value (read once).
    sum_sq: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) else { return };
        let g = if self.inv_scale == 1.0 { g } else { g * self.inv_scale };
        let sq = g.clone().powi_scalar(2).sum();
        self.sum_sq = Some(match self.sum_sq.take() {
            Some(s) => s + sq,
            None => sq,
        });
        self.grads.register::<B::InnerBackend, D>(param.id, g);
    }
}

/// Unscales the gradients of a loss-scaled step. Returns false (and the caller skips the
/// update) when any gradient overflowed to inf or NaN.
pub fn unscale_gradients<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &mut GradientsParams, scale: f32) -> bool {
    let mut v = Unscale::<B> { grads, inv_scale: 1.0 / scale, sum_sq: None };
    module.visit(&mut v);
    match v.sum_sq {
        Some(s) => {
            let total: f64 = s.into_scalar().elem();
            total.is_finite()
        }
        None => true,
    }
}
