//! cos/sin tables in HF's rotate-half layout: `[φ_0..φ_{K-1}, φ_0..φ_{K-1}]`, φ_i = m·θ_i.

use burn::tensor::{Tensor, backend::Backend};

/// cos and sin tables for `positions` (f32, may be fractional in CLEX training).
///
/// Angles are formed as one f32 product per entry, exactly like transformers'
/// `inv_freq @ position_ids`, so tables match it bit-for-bit up to cos/sin rounding. The
/// tables are differentiable w.r.t. `inv_freq` (CLEX training needs that).
///
/// # Shapes
/// - `positions`: `[n]`, `inv_freq`: `[K]`
/// - returns `([n, 2K], [n, 2K])`
pub fn cos_sin<B: Backend>(positions: Tensor<B, 1>, inv_freq: Tensor<B, 1>, attention_scaling: f32) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let angles = positions.unsqueeze_dim::<2>(1) * inv_freq.unsqueeze_dim::<2>(0);
    let emb = Tensor::cat(vec![angles.clone(), angles], 1);
    let (cos, sin) = (emb.clone().cos(), emb.sin());
    if attention_scaling == 1.0 { (cos, sin) } else { (cos.mul_scalar(attention_scaling), sin.mul_scalar(attention_scaling)) }
}

/// Host version of [`cos_sin`]: row-major `[n, 2K]` cos and sin.
pub fn cos_sin_host(positions: &[f32], inv_freq: &[f32], attention_scaling: f32) -> (Vec<f32>, Vec<f32>) {
    let k = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * 2 * k);
    let mut sin = Vec::with_capacity(positions.len() * 2 * k);
    for &m in positions {
        for _half in 0..2 {
            for &f in inv_freq {
                let a = m * f;
                cos.push(a.cos() * attention_scaling);
                sin.push(a.sin() * attention_scaling);
            }
        }
    }
    (cos, sin)
}
