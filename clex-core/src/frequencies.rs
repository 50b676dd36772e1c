//! "Which frequencies for N tokens?", answered once for every rope kind, CLEX included:
//! [`frequencies`] for inference and [`training_frequencies`] for a training draw.
//!
//! Inference: the fixed kinds come from their formulas ([`crate::rope`]), `dynamic` and
//! `longrope` change with N, and CLEX reads θ(t), t = ceil(N/P) clamped, from its layer's
//! table (docs/CLEX.md §6.1). Each answer carries a [`FrequencyKey`] that changes exactly
//! when the frequencies do, which is what a KV cache needs to know. Training: CLEX solves
//! θ(t) as one differentiable node for the drawn t (docs/CLEX.md §5); the other kinds train
//! at their fixed frequencies.

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::clex::{ClexBackend, ClexLayer, ScalingFactor};
use crate::config::{RopeConfig, RopeScaling};
use crate::rope::formula;

/// Identity of the frequencies in force: equal keys (for one model) mean equal frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrequencyKey {
    /// The kind's frequencies never change with length.
    Fixed,
    /// Dynamic NTK: the length the base was grown for, max(N, P).
    Dynamic(usize),
    /// LongRoPE: whether `long_factor` is in use (N past the original context).
    LongRope {
        /// N > `original_max_position_embeddings`.
        long: bool,
    },
    /// CLEX: the scaling factor t.
    Clex(usize),
}

/// The frequencies in force for one forward.
#[derive(Debug, Clone)]
pub struct Frequencies<B: Backend> {
    /// θ_i, `[rotary_dim / 2]`, f32 (differentiable w.r.t. U and D in CLEX training).
    pub inv_freq: Tensor<B, 1>,
    /// Multiplies cos and sin (YaRN / LongRoPE attention temperature; 1 otherwise).
    pub attention_scaling: f32,
    /// Changes exactly when `inv_freq` or `attention_scaling` change with length.
    pub key: FrequencyKey,
    /// CLEX: the scaling factor t used.
    pub scaling_factor: Option<ScalingFactor>,
}

/// The frequencies of a forward over `n` tokens in total (cache + new), at inference.
///
/// `clex` is the model's CLEX layer; for a `clex` rope with no layer (a config without its
/// weights) this gives θ(1), the ODE's starting point.
pub fn frequencies<B: Backend>(rope: &RopeConfig, clex: Option<&ClexLayer<B>>, n: usize, device: &B::Device) -> Frequencies<B> {
    if let Some(clex) = clex {
        let sf = clex.scaling_factor(n);
        return Frequencies { inv_freq: clex.theta(sf.t), attention_scaling: 1.0, key: FrequencyKey::Clex(sf.t), scaling_factor: Some(sf) };
    }
    let (inv_freq, attention_scaling) = formula(rope, n);
    let key = match &rope.scaling {
        RopeScaling::Dynamic { .. } => FrequencyKey::Dynamic(n.max(rope.max_position_embeddings)),
        RopeScaling::LongRope(p) => FrequencyKey::LongRope { long: n > p.original_max_position_embeddings },
        _ => FrequencyKey::Fixed,
    };
    let k = inv_freq.len();
    let inv_freq = Tensor::from_data(TensorData::new(inv_freq, [k]), (device, DType::F32));
    Frequencies { inv_freq, attention_scaling, key, scaling_factor: None }
}

/// The frequencies of a training forward over `seq_len` tokens: for a CLEX layer and a drawn
/// `t`, θ(t) from one differentiable solve (gradients reach U and D); otherwise the fixed
/// frequencies for `seq_len`, as at inference.
pub fn training_frequencies<B: ClexBackend>(
    rope: &RopeConfig,
    clex: Option<&ClexLayer<B>>,
    t: Option<usize>,
    seq_len: usize,
    device: &B::Device,
) -> Frequencies<B> {
    match (clex, t) {
        (Some(clex), Some(t)) => Frequencies {
            inv_freq: clex.theta_train(t),
            attention_scaling: 1.0,
            key: FrequencyKey::Clex(t),
            scaling_factor: Some(ScalingFactor { t, beyond_max: t > clex.config().params.max_factor }),
        },
        // Baselines train at their own frequencies on integer positions.
        _ => frequencies::<B>(rope, None, seq_len, device),
    }
}
