//! The CLEX ODE right-hand side F(z, t) on the host, and its vector-Jacobian product.
//!
//! docs/CLEX.md §3: with u = z + ℓ(t),
//!   F(z, t) = σ(u·U)·D + ℓ'(t),
//!   ℓ_i(t)  = −(2i/d)·ln B_te − (2i/(d−2))·ln α,   ℓ'_i(t) = −4i / ((d−2)(2t−1)),   α = 2t − 1,
//! with U = `ode_up_proj` [K, H], D = `ode_down_proj` [H, K] used as row-vector products and
//! B_te = 10000 whatever the model's rope_theta (the released weights were trained so).
//! ℓ and ℓ' are evaluated in closed form in f64 (the reference forms the same quantities
//! with f32 pow/log; the two agree to f32 rounding).

use super::kernels::{activate, outer_acc, scale_by_grad, transpose, vec_mat};
use crate::config::ClexAct;

/// Base of the NTK time embedding: always 10000 (docs/CLEX.md §3.2).
pub const TIME_EMBEDDING_BASE: f64 = 10000.0;

/// F(z, t) for one set of ODE weights.
#[derive(Debug, Clone)]
pub struct OdeFunction {
    k: usize,
    h: usize,
    act: ClexAct,
    up: Vec<f32>,
    down: Vec<f32>,
    /// (2i/d)·ln B_te
    ell_base: Vec<f64>,
    /// 2i/(d−2)
    ell_alpha: Vec<f64>,
}

/// Per-evaluation values the backward pass needs: u [K], a = u·U [H], s = σ(a) [H].
pub(crate) const fn record_len(k: usize, h: usize) -> usize {
    k + 2 * h
}

impl OdeFunction {
    /// `dim` is the number of rotary dims d (K = d/2); `up` is `[K, H]`, `down` is `[H, K]`,
    /// both row-major.
    pub fn new(dim: usize, act: ClexAct, up: Vec<f32>, down: Vec<f32>) -> Self {
        let k = dim / 2;
        assert!(dim >= 4 && dim.is_multiple_of(2), "CLEX needs an even rotary dim >= 4, got {dim}");
        let h = up.len() / k;
        assert_eq!(up.len(), k * h, "ode_up_proj must be [K, H]");
        assert_eq!(down.len(), h * k, "ode_down_proj must be [H, K]");
        let d = dim as f64;
        let ell_base = (0..k).map(|i| (2 * i) as f64 / d * TIME_EMBEDDING_BASE.ln()).collect();
        let ell_alpha = (0..k).map(|i| (2 * i) as f64 / (d - 2.0)).collect();
        OdeFunction { k, h, act, up, down, ell_base, ell_alpha }
    }

    /// K = d/2, the state size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// H = p·d, the hidden width.
    pub fn hidden(&self) -> usize {
        self.h
    }

    /// ℓ(t) and ℓ'(t) of the NTK time embedding.
    pub fn time_embedding(&self, t: f32, ell: &mut [f32], dell: &mut [f32]) {
        // The reference uses α = 1 below t = 1; every evaluation time is >= 1 anyway.
        let alpha = if t < 1.0 { 1.0 } else { 2.0 * t as f64 - 1.0 };
        let ln_alpha = alpha.ln();
        for i in 0..self.k {
            ell[i] = (-(self.ell_base[i] + self.ell_alpha[i] * ln_alpha)) as f32;
            dell[i] = (-2.0 * self.ell_alpha[i] / alpha) as f32;
        }
    }

    /// `out = F(z, t)`. When `record` is given (length [`record_len`]) it receives u, a, s.
    pub fn eval(&self, t: f32, z: &[f32], out: &mut [f32], scratch: &mut Scratch, record: Option<&mut [f32]>) {
        let (k, h) = (self.k, self.h);
        self.time_embedding(t, &mut scratch.ell, &mut scratch.dell);
        for ((u, z), l) in scratch.u.iter_mut().zip(z).zip(&scratch.ell) {
            *u = z + l;
        }
        vec_mat(&mut scratch.a, &scratch.u, &self.up);
        activate(self.act, &scratch.a, &mut scratch.s);
        vec_mat(out, &scratch.s, &self.down);
        for (o, d) in out.iter_mut().zip(&scratch.dell) {
            *o += d;
        }
        if let Some(rec) = record {
            rec[..k].copy_from_slice(&scratch.u);
            rec[k..k + h].copy_from_slice(&scratch.a);
            rec[k + h..].copy_from_slice(&scratch.s);
        }
    }

    /// Scratch buffers sized for this function.
    pub fn scratch(&self) -> Scratch {
        Scratch { u: vec![0.0; self.k], a: vec![0.0; self.h], s: vec![0.0; self.h], ell: vec![0.0; self.k], dell: vec![0.0; self.k] }
    }

    /// Transposed weights for [`OdeFunction::vjp`].
    pub(crate) fn transposed(&self) -> Transposed {
        Transposed { up_t: transpose(&self.up, self.k, self.h), down_t: transpose(&self.down, self.h, self.k) }
    }

    /// Reverse mode through one evaluation: given λ_F = ∂L/∂F and the evaluation's record,
    /// accumulates ∂L/∂U and ∂L/∂D and writes ∂L/∂z into `lam_z`.
    pub(crate) fn vjp(&self, tr: &Transposed, record: &[f32], lam_f: &[f32], lam_z: &mut [f32], grads: &mut WeightGrads, da: &mut [f32]) {
        let (k, h) = (self.k, self.h);
        let (u, rest) = record.split_at(k);
        let (a, s) = rest.split_at(h);
        // ds = λ_F·Dᵀ, then through σ.
        vec_mat(da, lam_f, &tr.down_t);
        scale_by_grad(self.act, a, s, da);
        outer_acc(&mut grads.down, s, lam_f);
        outer_acc(&mut grads.up, u, da);
        vec_mat(lam_z, da, &tr.up_t);
    }
}

/// Work buffers of one evaluation.
#[derive(Debug, Clone)]
pub struct Scratch {
    u: Vec<f32>,
    a: Vec<f32>,
    s: Vec<f32>,
    ell: Vec<f32>,
    dell: Vec<f32>,
}

/// Uᵀ [H, K] and Dᵀ [K, H] for the backward products.
#[derive(Debug, Clone)]
pub(crate) struct Transposed {
    up_t: Vec<f32>,
    down_t: Vec<f32>,
}

/// Gradients w.r.t. U [K, H] and D [H, K].
#[derive(Debug, Clone, PartialEq)]
pub struct WeightGrads {
    /// ∂L/∂U, row-major [K, H].
    pub up: Vec<f32>,
    /// ∂L/∂D, row-major [H, K].
    pub down: Vec<f32>,
}
