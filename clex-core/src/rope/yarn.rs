//! YaRN: a per-frequency blend of interpolated (θ/s) and original θ, ramped between the
//! dims that make `beta_slow` and `beta_fast` rotations over the original context, plus an
//! attention temperature 0.1·mscale·ln(s) + 1 applied to cos and sin.

use std::f64::consts::PI;

use super::default::pos_freqs;
use crate::config::YarnParams;

fn get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 { 1.0 } else { 0.1 * mscale * scale.ln() + 1.0 }
}

/// Dim index at which a frequency makes `rotations` turns over `max_pos` positions.
fn correction_dim(rotations: f64, dim: usize, base: f64, max_pos: usize) -> f64 {
    (dim as f64 * (max_pos as f64 / (rotations * 2.0 * PI)).ln()) / (2.0 * base.ln())
}

/// YaRN inverse frequencies and attention scaling.
pub fn frequencies(base: f64, dim: usize, p: &YarnParams) -> (Vec<f32>, f32) {
    let attention = match p.attention_factor {
        Some(a) => a,
        None => match (p.mscale, p.mscale_all_dim) {
            (Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => get_mscale(p.factor, m) / get_mscale(p.factor, ma),
            _ => get_mscale(p.factor, 1.0),
        },
    };
    let omp = p.original_max_position_embeddings;
    let mut low = correction_dim(p.beta_fast, dim, base, omp);
    let mut high = correction_dim(p.beta_slow, dim, base, omp);
    if p.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let mut high = high.min(dim as f64 - 1.0);
    if low == high {
        high += 0.001; // transformers' guard against a zero-width ramp
    }
    let (low32, span32) = (low as f32, (high - low) as f32);
    let factor = p.factor as f32;
    let inv_freq = pos_freqs(base, dim)
        .into_iter()
        .enumerate()
        .map(|(i, pf)| {
            let extrapolation = 1.0 / pf;
            let interpolation = 1.0 / (factor * pf);
            let ramp = ((i as f32 - low32) / span32).clamp(0.0, 1.0);
            let extra_weight = 1.0 - ramp;
            interpolation * (1.0 - extra_weight) + extrapolation * extra_weight
        })
        .collect();
    (inv_freq, attention as f32)
}
