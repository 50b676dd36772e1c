//! LongRoPE (Phi-3): per-frequency divisors, `long_factor` beyond the original context and
//! `short_factor` within it, with attention scale sqrt(1 + ln s / ln P_orig).

use super::default::pos_freqs;
use crate::config::LongRopeParams;

/// LongRoPE inverse frequencies and attention scaling for a forward of `seq_len` tokens.
pub fn frequencies(base: f64, dim: usize, max_pos: usize, p: &LongRopeParams, seq_len: usize) -> (Vec<f32>, f32) {
    let omp = p.original_max_position_embeddings;
    let factor = p.factor.unwrap_or(max_pos as f64 / omp as f64);
    let attention = p.attention_factor.unwrap_or_else(|| if factor <= 1.0 { 1.0 } else { (1.0 + factor.ln() / (omp as f64).ln()).sqrt() });
    let ext = if seq_len > omp { &p.long_factor } else { &p.short_factor };
    let inv_freq = pos_freqs(base, dim).into_iter().zip(ext).map(|(pf, e)| 1.0 / (*e as f32 * pf)).collect();
    (inv_freq, attention as f32)
}
