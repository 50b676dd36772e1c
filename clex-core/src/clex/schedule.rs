//! Which t a forward uses (docs/CLEX.md §6.1), the optional query log-scaling (§6.3), and
//! the training-time position sampler (§5).

use rand::{Rng, SeedableRng, seq::index};
use rand_chacha::ChaCha8Rng;

use crate::error::ClexError;

/// The scaling factor chosen for a forward over `n` tokens (cache + new).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingFactor {
    /// t = min(ceil(N / P), T_max), always >= 1.
    pub t: usize,
    /// True when N > P·T_max: the reference crashes there (its table has P·T_max rows);
    /// we keep t = T_max and build rotary rows for every position (extrapolating θ(T_max)).
    pub beyond_max: bool,
}

/// t = ceil(N / P) clamped to T_max.
///
/// For N > P·T_max the reference raises an IndexError; we choose to clamp t to T_max and
/// let callers rotate all N positions with θ(T_max), flagging it in `beyond_max` so a CLI
/// can warn that the model was never trained that far.
pub fn scaling_factor(n: usize, max_position_embeddings: usize, max_factor: usize) -> ScalingFactor {
    let p = max_position_embeddings.max(1);
    let t = n.div_ceil(p).max(1);
    ScalingFactor { t: t.min(max_factor.max(1)), beyond_max: t > max_factor }
}

/// λ(N) = ln(N)/ln(P), computed like the reference: both logs rounded to the model dtype
/// `round` (bf16 for the released checkpoints, identity for f32) before dividing, and the
/// quotient rounded again. Not clamped: λ < 1 for N < P and λ = 0 for N = 1.
pub fn log_scale(n: usize, max_position_embeddings: usize, round: impl Fn(f32) -> f32) -> f32 {
    let ln_n = round((n.max(1) as f32).ln());
    let ln_p = round((max_position_embeddings.max(2) as f32).ln());
    round(ln_n / ln_p)
}

/// One training draw: the scaling factor and the L positions the tokens are rotated at.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainDraw {
    /// t drawn uniformly from {t_min..T_max}.
    pub t: usize,
    /// Sorted (see the last-pair quirk) f32 positions spanning [0, t·P), length L.
    pub positions: Vec<f32>,
}

/// Seeded sampler of t and training positions (docs/CLEX.md §5).
///
/// Per forward: t ~ U{t_min..=T_max} (t_min = 1 as in HEAD; 2 reproduces the paper-era
/// code), R = sorted random (L−2)-subset of 0..L·t−2, s = max(1, L div P),
/// positions = [0, (R+1)/s, (L·t) div s − 1].
#[derive(Debug, Clone)]
pub struct PositionSampler {
    seq_len: usize,
    max_position_embeddings: usize,
    max_factor: usize,
    min_factor: usize,
    rng: ChaCha8Rng,
}

impl PositionSampler {
    /// A sampler for sequences of `seq_len` tokens; `seed` fixes every draw.
    pub fn new(seq_len: usize, max_position_embeddings: usize, max_factor: usize, seed: u64) -> Result<Self, ClexError> {
        if seq_len < 2 {
            return Err(ClexError::OutOfRange(format!("CLEX training needs sequences of at least 2 tokens, got {seq_len}")));
        }
        if max_position_embeddings == 0 || max_factor == 0 {
            return Err(ClexError::OutOfRange("max_position_embeddings and max_factor must be >= 1".into()));
        }
        Ok(PositionSampler { seq_len, max_position_embeddings, max_factor, min_factor: 1, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    /// Draw t from {min_factor..=T_max} instead of {1..=T_max} (paper-era code used 2).
    pub fn with_min_factor(mut self, min_factor: usize) -> Self {
        self.min_factor = min_factor.clamp(1, self.max_factor);
        self
    }

    /// The next (t, positions).
    pub fn sample(&mut self) -> TrainDraw {
        let t = self.rng.random_range(self.min_factor..=self.max_factor);
        let positions = self.positions_for(t);
        TrainDraw { t, positions }
    }

    /// Positions for a given t (the t draw skipped), from this sampler's RNG.
    pub fn positions_for(&mut self, t: usize) -> Vec<f32> {
        let l = self.seq_len;
        let s = (l / self.max_position_embeddings).max(1);
        let pool = l * t - 2;
        let mut r: Vec<usize> = index::sample(&mut self.rng, pool, l - 2).into_vec();
        r.sort_unstable();
        positions_from_subset(l, t, s, &r)
    }
}

/// positions = [0, (R+1)/s, (L·t) div s − 1] for a sorted subset R of 0..L·t−2.
///
/// When s > 1 the largest interior position (up to (L·t − 2)/s) can exceed the forced last
/// one (t·P − 1): the reference has the same quirk and we keep it for parity.
pub fn positions_from_subset(seq_len: usize, t: usize, s: usize, subset: &[usize]) -> Vec<f32> {
    let s_f = s as f32;
    let mut pos = Vec::with_capacity(seq_len);
    pos.push(0.0);
    pos.extend(subset.iter().map(|&r| (r + 1) as f32 / s_f));
    pos.push(((seq_len * t) / s - 1) as f32);
    pos
}
