//! The RoPE family: inverse frequencies and attention scaling for every non-CLEX kind
//! (one file per kind, each mirroring transformers' `modeling_rope_utils.py` in f32), the
//! cos/sin tables and the rotate-half application.

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

/// Inverse frequencies (length rotary_dim / 2) and the factor HF multiplies cos and sin by.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFrequencies {
    /// θ_i, i = 0..rotary_dim/2, f32 as transformers computes them.
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN / LongRoPE attention temperature; 1 otherwise).
    pub attention_scaling: f32,
}

impl RopeConfig {
    /// Frequencies in force for a forward whose largest position is `seq_len - 1`.
    ///
    /// Only `dynamic` and `longrope` depend on `seq_len`. For `clex` this returns the
    /// initial frequencies θ(1) (the ODE's starting point); θ(t) comes from
    /// [`crate::clex::ClexLayer`].
    pub fn frequencies(&self, seq_len: usize) -> RopeFrequencies {
        let dim = self.rotary_dim;
        let one = |inv_freq| RopeFrequencies { inv_freq, attention_scaling: 1.0 };
        match &self.scaling {
            RopeScaling::Default | RopeScaling::Clex(_) => one(base_inv_freq(self.theta, dim)),
            RopeScaling::Linear { factor } => one(linear::inv_freq(self.theta, dim, *factor)),
            RopeScaling::Dynamic { factor } => one(dynamic::inv_freq(self.theta, dim, *factor, self.max_position_embeddings, seq_len)),
            RopeScaling::Yarn(p) => yarn::frequencies(self.theta, dim, p),
            RopeScaling::Llama3(p) => one(llama3::inv_freq(self.theta, dim, p)),
            RopeScaling::LongRope(p) => longrope::frequencies(self.theta, dim, self.max_position_embeddings, p, seq_len),
        }
    }
}
