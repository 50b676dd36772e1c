//! The RoPE family: inverse frequencies and attention scaling for every non-CLEX kind
//! (one file per kind, each mirroring transformers' `modeling_rope_utils.py` in f32), the
//! cos/sin tables and the rotate-half application. Which of them a forward uses is answered
//! by [`crate::frequencies`].

mod apply;
mod default;
mod dynamic;
mod linear;
mod llama3;
mod longrope;
mod table;
mod yarn;

pub use apply::{apply_rotary, apply_rotary_batched, apply_rotary_seq_major, rotate_half};
pub use default::base_inv_freq;
pub use table::{cos_sin, cos_sin_host};

use crate::config::{RopeConfig, RopeScaling};

/// Inverse frequencies (length rotary_dim / 2) and the factor cos and sin are multiplied by,
/// for every kind whose frequencies do not come from a learned layer. For `clex` this is
/// θ(1), the ODE's starting point: [`crate::frequencies`] is what answers for a CLEX model.
pub(crate) fn formula(rope: &RopeConfig, seq_len: usize) -> (Vec<f32>, f32) {
    let dim = rope.rotary_dim;
    let one = |inv_freq| (inv_freq, 1.0);
    match &rope.scaling {
        RopeScaling::Default | RopeScaling::Clex(_) => one(base_inv_freq(rope.theta, dim)),
        RopeScaling::Linear { factor } => one(linear::inv_freq(rope.theta, dim, *factor)),
        RopeScaling::Dynamic { factor } => one(dynamic::inv_freq(rope.theta, dim, *factor, rope.max_position_embeddings, seq_len)),
        RopeScaling::Yarn(p) => yarn::frequencies(rope.theta, dim, p),
        RopeScaling::Llama3(p) => one(llama3::inv_freq(rope.theta, dim, p)),
        RopeScaling::LongRope(p) => longrope::frequencies(rope.theta, dim, rope.max_position_embeddings, p, seq_len),
    }
}
