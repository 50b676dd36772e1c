//! Rotary application in HF's rotate-half convention, with partial rotary: only the first
//! `rot` dims of each head are rotated (pairs i and i + rot/2), the rest pass through.
//!
//! Every product is between operands of one flat shape: the cos/sin tables are repeated over
//! the heads (and batch rows) first, and both operands are viewed as `[rows, numel/rows]`.
//! burn-flex multiplies such operands (or a `[1, n]` row shared by every row) with SIMD, but
//! walks a broadcast `[.., 1, seq, rot]` table one strided element at a time, about 10x
//! slower: 0.65 s for queries of `[1, 32, 4096, 128]` before this layout, see BENCHMARKS.md.
//! The values are those of `x·cos + rotate_half(x)·sin` either way (same products, same sums).

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
    let heads = x.dims()[1];
    let table = |t: Tensor<B, 3>| t.unsqueeze_dim::<4>(1).repeat_dim(1, heads);
    rotate(x, table(cos), table(sin))
}

/// [`apply_rotary_batched`] for the sequence-major layout a projection produces (`[batch,
/// seq, hidden]` viewed as `[batch, seq, heads, head_dim]`, contiguous without a copy).
///
/// # Shapes
/// - `x`: `[batch, seq, heads, head_dim]`
/// - `cos`, `sin`: `[batch or 1, seq, rot]`
/// - returns `[batch, seq, heads, head_dim]`
pub fn apply_rotary_seq_major<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 3>, sin: Tensor<B, 3>) -> Tensor<B, 4> {
    let heads = x.dims()[2];
    let table = |t: Tensor<B, 3>| t.unsqueeze_dim::<4>(2).repeat_dim(2, heads);
    rotate(x, table(cos), table(sin))
}

/// `x·cos + rotate_half(x)·sin` on the first `rot` dims, with tables already at x's shape
/// (up to a leading 1 for tables shared by the batch).
///
/// # Shapes
/// - `x`: `[batch, a, b, head_dim]`; `cos`, `sin`: `[batch or 1, a, b, rot]`
fn rotate<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, a, b, head_dim] = x.dims();
    let [rows, _, _, rot] = cos.dims();
    let x_rot = if rot == head_dim { x.clone() } else { x.clone().narrow(3, 0, rot) };
    let n = a * b * rot;
    let half = rotate_half(x_rot.clone()).reshape([batch, n]);
    let y = x_rot.reshape([batch, n]) * cos.reshape([rows, n]) + half * sin.reshape([rows, n]);
    let y = y.reshape([batch, a, b, rot]);
    if rot == head_dim { y } else { Tensor::cat(vec![y, x.narrow(3, rot, head_dim - rot)], 3) }
}
