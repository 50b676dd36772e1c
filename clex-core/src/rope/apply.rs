//! Rotary application in HF's rotate-half convention, with partial rotary: only the first
//! `rot` dims of each head are rotated (pairs i and i + rot/2), the rest pass through.

use burn::tensor::{Tensor, backend::Backend};

/// `cat(-x2, x1)` over the last dim, where x1/x2 are its two halves.
pub fn rotate_half<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let last = D - 1;
    let n = x.dims()[last];
    let x1 = x.clone().narrow(last, 0, n / 2);
    let x2 = x.narrow(last, n / 2, n - n / 2);
    Tensor::cat(vec![x2.neg(), x1], last)
}

/// Rotates the first `rot = cos.dims()[1]` dims of every head: `y = x·cos + rotate_half(x)·sin`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[seq, rot]` with `rot <= head_dim`, even
/// - returns `[batch, heads, seq, head_dim]`
pub fn apply_rotary<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    apply_rotary_batched(x, cos.unsqueeze::<3>(), sin.unsqueeze::<3>())
}

/// [`apply_rotary`] with per-row tables (left-padded batches rotate each row at its own
/// positions).
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch or 1, seq, rot]`
/// - returns `[batch, heads, seq, head_dim]`
pub fn apply_rotary_batched<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 3>, sin: Tensor<B, 3>) -> Tensor<B, 4> {
    let head_dim = x.dims()[3];
    let rot = cos.dims()[2];
    let cos = cos.unsqueeze_dim::<4>(1);
    let sin = sin.unsqueeze_dim::<4>(1);
    if rot == head_dim {
        return x.clone() * cos + rotate_half(x) * sin;
    }
    let x_rot = x.clone().narrow(3, 0, rot);
    let x_pass = x.narrow(3, rot, head_dim - rot);
    let y = x_rot.clone() * cos + rotate_half(x_rot) * sin;
    Tensor::cat(vec![y, x_pass], 3)
}
