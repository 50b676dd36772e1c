//! The kernels the ODE needs: vector·matrix and outer-product accumulation on K×H
//! matrices (K = d/2, H = p·d), and the activations with their derivatives. They run on the host: the ODE is tiny and strictly
//! sequential, so a GPU launch per stage would cost far more than the arithmetic. With
//! AVX2+FMA (detected at run time) LLVM turns the inner loops into 8-wide FMAs.

use crate::config::ClexAct;

#[inline(always)]
fn mac<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn vec_mat_impl<const FMA: bool>(out: &mut [f32], v: &[f32], m: &[f32]) {
    let cols = out.len();
    out.fill(0.0);
    for (vi, row) in v.iter().zip(m.chunks_exact(cols)) {
        for (o, w) in out.iter_mut().zip(row) {
            *o = mac::<FMA>(*vi, *w, *o);
        }
    }
}

#[inline(always)]
fn outer_acc_impl<const FMA: bool>(m: &mut [f32], a: &[f32], b: &[f32]) {
    let cols = b.len();
    for (ai, row) in a.iter().zip(m.chunks_exact_mut(cols)) {
        for (o, bj) in row.iter_mut().zip(b) {
            *o = mac::<FMA>(*ai, *bj, *o);
        }
    }
}

// exp, tanh and silu in a branch-free form LLVM can vectorise (libm's scalar tanhf was
// ~40% of a forward solve). Cephes' expf/tanhf polynomials: ~2 ulp in f32.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published
fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1)
        * (r * r)
        + r
        + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
#[allow(clippy::excessive_precision)]
fn tanh_fast(x: f32) -> f32 {
    let ax = x.abs();
    let big = 1.0 - 2.0 / (exp_fast(2.0 * ax) + 1.0);
    let z = x * x;
    let small = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328_2e-1) * z * ax + ax;
    let r = if ax > 0.625 { big } else { small };
    r.copysign(x)
}

#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[inline(always)]
fn activate_impl(act: ClexAct, a: &[f32], s: &mut [f32]) {
    match act {
        ClexAct::Tanh => s.iter_mut().zip(a).for_each(|(s, a)| *s = tanh_fast(*a)),
        ClexAct::Silu => s.iter_mut().zip(a).for_each(|(s, a)| *s = a * sigmoid_fast(*a)),
    }
}

/// `g *= σ'(a)`, given a and s = σ(a).
#[inline(always)]
fn scale_by_grad_impl(act: ClexAct, a: &[f32], s: &[f32], g: &mut [f32]) {
    match act {
        ClexAct::Tanh => g.iter_mut().zip(s).for_each(|(g, s)| *g *= 1.0 - s * s),
        ClexAct::Silu => g.iter_mut().zip(a).for_each(|(g, a)| {
            let sg = sigmoid_fast(*a);
            *g *= sg * (1.0 + a * (1.0 - sg));
        }),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn activate_avx2(act: ClexAct, a: &[f32], s: &mut [f32]) {
    activate_impl(act, a, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scale_by_grad_avx2(act: ClexAct, a: &[f32], s: &[f32], g: &mut [f32]) {
    scale_by_grad_impl(act, a, s, g)
}

/// `s = σ(a)` elementwise.
pub(crate) fn activate(act: ClexAct, a: &[f32], s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { activate_avx2(act, a, s) };
    }
    activate_impl(act, a, s)
}

/// `g *= σ'(a)` elementwise, given a and s = σ(a).
pub(crate) fn scale_by_grad(act: ClexAct, a: &[f32], s: &[f32], g: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { scale_by_grad_avx2(act, a, s, g) };
    }
    scale_by_grad_impl(act, a, s, g)
}

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn vec_mat_fma(out: &mut [f32], v: &[f32], m: &[f32]) {
    vec_mat_impl::<true>(out, v, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn outer_acc_fma(m: &mut [f32], a: &[f32], b: &[f32]) {
    outer_acc_impl::<true>(m, a, b)
}

/// `out = v · M` with `M` row-major `[v.len(), out.len()]`.
pub(crate) fn vec_mat(out: &mut [f32], v: &[f32], m: &[f32]) {
    debug_assert_eq!(m.len(), v.len() * out.len());
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { vec_mat_fma(out, v, m) };
    }
    vec_mat_impl::<false>(out, v, m)
}

/// `M += a ⊗ b` with `M` row-major `[a.len(), b.len()]`.
pub(crate) fn outer_acc(m: &mut [f32], a: &[f32], b: &[f32]) {
    debug_assert_eq!(m.len(), a.len() * b.len());
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked above).
        return unsafe { outer_acc_fma(m, a, b) };
    }
    outer_acc_impl::<false>(m, a, b)
}

/// Row-major transpose of a `[rows, cols]` matrix.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_activations_are_accurate() {
        let xs: Vec<f32> = (-40000..=40000).map(|i| i as f32 * 5e-4).chain([1e-30, -1e-7, 50.0, -90.0, 100.0]).collect();
        let mut worst = [0.0f64; 3];
        for &x in &xs {
            let (e, t, s) = (exp_fast(x) as f64, tanh_fast(x) as f64, (x * sigmoid_fast(x)) as f64);
            let xd = x as f64;
            let (we, wt, ws) = (xd.exp(), xd.tanh(), xd / (1.0 + (-xd).exp()));
            if x.abs() <= 80.0 {
                // Beyond that exp_fast clamps on purpose (callers only need 1/(1+e) to saturate).
                worst[0] = worst[0].max((e - we).abs() / we);
            }
            worst[1] = worst[1].max((t - wt).abs() / wt.abs().max(1e-30));
            worst[2] = worst[2].max((s - ws).abs() / ws.abs().max(1e-30));
        }
        // f32 epsilon is 1.19e-7: all three stay within a few ulps.
        assert!(worst[0] < 5e-7 && worst[1] < 5e-7 && worst[2] < 1e-6, "rel errors exp/tanh/silu: {worst:?}");
        let (a, mut s, mut g) = (xs.clone(), vec![0.0; xs.len()], vec![1.0; xs.len()]);
        activate(ClexAct::Tanh, &a, &mut s);
        scale_by_grad(ClexAct::Tanh, &a, &s, &mut g);
        for (x, g) in a.iter().zip(&g) {
            let want = 1.0 - (*x as f64).tanh().powi(2);
            assert!((*g as f64 - want).abs() < 1e-6, "tanh' at {x}: {g} vs {want}");
        }
        g.fill(1.0);
        activate(ClexAct::Silu, &a, &mut s);
        scale_by_grad(ClexAct::Silu, &a, &s, &mut g);
        for (x, g) in a.iter().zip(&g) {
            let xd = *x as f64;
            let sg = 1.0 / (1.0 + (-xd).exp());
            let want = sg * (1.0 + xd * (1.0 - sg));
            assert!((*g as f64 - want).abs() < 1e-6 * want.abs().max(1.0), "silu' at {x}: {g} vs {want}");
        }
    }
}
