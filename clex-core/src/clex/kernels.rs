//! The three dense kernels the ODE needs (vector·matrix and outer-product accumulation on
//! K×H matrices, K = d/2, H = p·d). They run on the host: the ODE is tiny and strictly
//! sequential, so a GPU launch per stage would cost far more than the arithmetic. With
//! AVX2+FMA (detected at run time) LLVM turns the inner loops into 8-wide FMAs.

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
