//! θ(t) on the host: the training solve over [1, t] and the inference table for t = 1..T_max
//! from one solve (docs/CLEX.md §4.3). Which table a layer uses, and when it is rebuilt, is
//! [`super::table`]'s business.

use super::ode::OdeFunction;
use super::solver::{self, SolveGrads, Tape};
use crate::config::ClexAct;

/// What fixes an ODE solve besides the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OdeSpec {
    /// Rotary dims d (K = d/2).
    pub dim: usize,
    /// Activation.
    pub act: ClexAct,
    /// RK4 step h.
    pub time_dt: f32,
}

/// Host copies of the CLEX parameters, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct OdeWeights {
    /// inv_freq [K]: z(1) = ln inv_freq.
    pub inv_freq: Vec<f32>,
    /// ode_up_proj [K, H].
    pub up: Vec<f32>,
    /// ode_down_proj [H, K].
    pub down: Vec<f32>,
}

impl OdeWeights {
    fn function(&self, spec: &OdeSpec) -> OdeFunction {
        OdeFunction::new(spec.dim, spec.act, self.up.clone(), self.down.clone())
    }

    fn z0(&self) -> Vec<f32> {
        self.inv_freq.iter().map(|f| f.ln()).collect()
    }

    /// θ(t) = exp(z(t)) from one solve over [1, t] (the training call). t = 1 returns
    /// inv_freq itself, as the reference bypasses the ODE there.
    pub fn theta(&self, spec: &OdeSpec, t: usize) -> Vec<f32> {
        if t <= 1 {
            return self.inv_freq.clone();
        }
        let z = solver::solve(&self.function(spec), &self.z0(), &[1.0, t as f32], spec.time_dt, None);
        z[1].iter().map(|z| z.exp()).collect()
    }

    /// Like [`OdeWeights::theta`] for t > 1, keeping what [`ThetaTape::backward`] needs.
    pub fn theta_taped(&self, spec: &OdeSpec, t: usize) -> ThetaTape {
        assert!(t > 1, "the t = 1 branch bypasses the ODE; nothing to tape");
        let f = self.function(spec);
        let (z, tape) = solver::solve_taped(&f, &self.z0(), 1.0, t as f32, spec.time_dt);
        let theta = z.iter().map(|z| z.exp()).collect();
        ThetaTape { f, tape, theta, inv_freq: self.inv_freq.clone() }
    }

    /// Rows θ(1..=T_max), row-major [T_max, K], from ONE solve over the grid [1, 2, .., T_max]
    /// (row 0 is inv_freq itself: t = 1 never runs the ODE).
    pub fn table(&self, spec: &OdeSpec, max_factor: usize) -> Vec<f32> {
        let times: Vec<f32> = (1..=max_factor.max(1)).map(|t| t as f32).collect();
        let z = solver::solve(&self.function(spec), &self.z0(), &times, spec.time_dt, None);
        let mut rows = self.inv_freq.clone();
        for zt in &z[1..] {
            rows.extend(zt.iter().map(|z| z.exp()));
        }
        rows
    }
}

/// A taped θ(t) solve.
#[derive(Debug, Clone)]
pub struct ThetaTape {
    f: OdeFunction,
    tape: Tape,
    /// θ(t).
    pub theta: Vec<f32>,
    inv_freq: Vec<f32>,
}

/// Gradients of a loss w.r.t. the CLEX parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ThetaGrads {
    /// ∂L/∂inv_freq [K].
    pub inv_freq: Vec<f32>,
    /// ∂L/∂U [K, H].
    pub up: Vec<f32>,
    /// ∂L/∂D [H, K].
    pub down: Vec<f32>,
}

impl ThetaTape {
    /// Given ∂L/∂θ(t), the exact gradients through exp, every RK4 stage and ln.
    pub fn backward(&self, grad_theta: &[f32]) -> ThetaGrads {
        let lam: Vec<f32> = grad_theta.iter().zip(&self.theta).map(|(g, th)| g * th).collect();
        let SolveGrads { z0, weights } = solver::backprop(&self.f, &self.tape, &lam);
        let inv_freq = z0.iter().zip(&self.inv_freq).map(|(g, f)| g / f).collect();
        ThetaGrads { inv_freq, up: weights.up, down: weights.down }
    }

    /// RK4 steps in the tape.
    pub fn steps(&self) -> usize {
        self.tape.steps()
    }
}

/// θ table for t = 1..T_max, row-major [T_max, K].
#[derive(Debug, Clone, PartialEq)]
pub struct ThetaTable {
    k: usize,
    rows: Vec<f32>,
}

impl ThetaTable {
    /// θ(1..=T_max) for these weights, from one solve.
    pub fn solve(weights: &OdeWeights, spec: &OdeSpec, max_factor: usize) -> Self {
        ThetaTable { k: weights.inv_freq.len(), rows: weights.table(spec, max_factor) }
    }

    /// θ(t) for 1 <= t <= T_max.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.rows[(t - 1) * self.k..t * self.k]
    }

    /// T_max.
    pub fn max_factor(&self) -> usize {
        self.rows.len() / self.k
    }

    /// All rows, row-major [T_max, K].
    pub fn as_slice(&self) -> &[f32] {
        &self.rows
    }
}
