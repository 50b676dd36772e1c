//! Plain RoPE: θ_i = 1 / B^(2i/d).

/// `1 / base^(2i/dim)` for i = 0..dim/2, computed in f32 like transformers
/// (`base ** (arange(0, dim, 2).float() / dim)`).
pub fn base_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    pos_freqs(base, dim).into_iter().map(|p| 1.0 / p).collect()
}

/// `base^(2i/dim)` in f32: the wavelength factors all kinds start from.
pub(crate) fn pos_freqs(base: f64, dim: usize) -> Vec<f32> {
    let base = base as f32;
    (0..dim / 2).map(|i| base.powf((2 * i) as f32 / dim as f32)).collect()
}
