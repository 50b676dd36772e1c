//! θ(t) through plain burn tensor ops, one op per arithmetic step of every RK4 stage.
//!
//! Slow and graph-heavy by design: under an autodiff backend burn differentiates it node by
//! node, which makes it the independent check of the hand-written backward
//! ([`super::ClexBackend`]) and the baseline it is benchmarked against. Not for training.

use burn::tensor::{Tensor, TensorData, activation, backend::Backend};

use super::solver::time_grid;
use super::theta::OdeSpec;
use crate::config::ClexAct;

/// θ(t) = exp(z(t)) with z(1) = ln(inv_freq), integrated over the same f32 grid and stages
/// as [`super::solver`].
///
/// # Shapes
/// - `inv_freq`: `[K]`, `up`: `[K, H]`, `down`: `[H, K]`
/// - returns `[K]`
pub fn theta_by_tensor_ops<B: Backend>(
    inv_freq: Tensor<B, 1>,
    up: Tensor<B, 2>,
    down: Tensor<B, 2>,
    spec: &OdeSpec,
    t: usize,
) -> Tensor<B, 1> {
    let k = spec.dim / 2;
    if t <= 1 {
        return inv_freq;
    }
    let device = inv_freq.device();
    let d = spec.dim as f64;
    let row = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [1, k]), &device);
    let f = |tt: f32, z: Tensor<B, 2>| -> Tensor<B, 2> {
        let alpha = 2.0 * tt as f64 - 1.0;
        let ell = (0..k).map(|i| (-(2.0 * i as f64 / d * 1e4f64.ln() + 2.0 * i as f64 / (d - 2.0) * alpha.ln())) as f32).collect();
        let dell = (0..k).map(|i| (-4.0 * i as f64 / ((d - 2.0) * alpha)) as f32).collect();
        let a = (z + row(ell)).matmul(up.clone());
        let s = match spec.act {
            ClexAct::Tanh => a.tanh(),
            ClexAct::Silu => activation::silu(a),
        };
        s.matmul(down.clone()) + row(dell)
    };
    let mut y = inv_freq.log().reshape([1, k]);
    for w in time_grid(1.0, t as f32, spec.time_dt).windows(2) {
        let (t0, t1) = (w[0], w[1]);
        let dt = t1 - t0;
        let k1 = f(t0, y.clone());
        let k2 = f(t0 + dt / 3.0, y.clone() + k1.clone() * (dt / 3.0));
        let k3 = f(t0 + dt * 2.0 / 3.0, y.clone() + (k2.clone() - k1.clone() / 3.0) * dt);
        let k4 = f(t1, y.clone() + (k1.clone() - k2.clone() + k3.clone()) * dt);
        y = y + (k1 + (k2 + k3) * 3.0 + k4) * (dt * 0.125);
    }
    y.exp().reshape([k])
}
