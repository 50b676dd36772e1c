//! Shared by the clex-core benches (a directory, so cargo does not take it for a bench).

use clex_core::clex::OdeWeights;
use clex_core::rope::base_inv_freq;

/// Deterministic, trained-looking CLEX weights (small, non-zero D) for d and p.
pub fn weights(dim: usize, p: usize) -> OdeWeights {
    let (k, h) = (dim / 2, p * dim);
    OdeWeights {
        inv_freq: base_inv_freq(1e4, dim),
        up: (0..k * h).map(|i| 0.02 * ((i * 37 % 101) as f32 / 50.0 - 1.0)).collect(),
        down: (0..h * k).map(|i| 0.003 * ((i * 53 % 97) as f32 / 48.0 - 1.0)).collect(),
    }
}
