//! Dynamic NTK scaling: the base grows with the current length N once N > P,
//! B' = B · (factor·N/P − (factor − 1))^(d/(d−2)).

use super::default::base_inv_freq;

/// Frequencies for a forward whose sequence length is `seq_len`.
///
/// transformers keeps the init-time table while `seq_len <= P` and otherwise recomputes it
/// with f32 tensor arithmetic (seq_len arrives as a tensor), which we mirror.
pub fn inv_freq(base: f64, dim: usize, factor: f64, max_pos: usize, seq_len: usize) -> Vec<f32> {
    if seq_len <= max_pos {
        return base_inv_freq(base, dim);
    }
    let f = factor as f32;
    let scaled = (f * seq_len as f32 / max_pos as f32) - (f - 1.0);
    let exponent = (dim as f64 / (dim as f64 - 2.0)) as f32;
    let new_base = base as f32 * scaled.powf(exponent);
    let d = dim as f32;
    (0..dim / 2).map(|i| 1.0 / new_base.powf((2 * i) as f32 / d)).collect()
}
