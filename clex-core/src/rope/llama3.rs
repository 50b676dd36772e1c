//! Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth blend between.

use std::f32::consts::PI;

use super::default::base_inv_freq;
use crate::config::Llama3Params;

/// Llama-3.1 frequencies (attention scaling is 1).
pub fn inv_freq(base: f64, dim: usize, p: &Llama3Params) -> Vec<f32> {
    let old_ctx = p.original_max_position_embeddings as f32;
    let (low, high, factor) = (p.low_freq_factor as f32, p.high_freq_factor as f32, p.factor as f32);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    base_inv_freq(base, dim)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * PI / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen; // wavelengths are finite
            if medium {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}
