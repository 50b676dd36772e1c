//! Linear scaling (position interpolation): every frequency divided by `factor`.

use super::default::base_inv_freq;

/// θ_i / factor.
pub fn inv_freq(base: f64, dim: usize, factor: f64) -> Vec<f32> {
    let factor = factor as f32;
    base_inv_freq(base, dim).into_iter().map(|f| f / factor).collect()
}
