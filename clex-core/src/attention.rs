//! Scaled dot-product attention over sequence-major tensors, with grouped KV heads, a causal
//! offset for cached keys and left padding, and the KV-cache write, as [`ClexBackend`]
//! operations with three implementations chosen by backend:
//! - burn's fused op (`burn::tensor::module::attention`: cubecl's flash kernels, libtorch's
//!   SDPA) for the GPU backends: [`fused`];
//! - our own kernel for burn-flex ([`flex`]): burn-flex's op runs one thread per call, copies
//!   strided keys and values to contiguous ones and needs KV heads repeated to the query
//!   heads, which together cost a long-context decode step a full copy of the cache per layer
//!   (BENCHMARKS.md, "Long context");
//! - the explicit product-softmax-product with the softmax in f32 ([`explicit`]) under
//!   autodiff, where burn decomposes its op into the same primitives anyway and half-precision
//!   training needs the f32 softmax.
//!
//! Every path takes queries already multiplied by any CLEX log scale λ(N) and scales scores
//! by 1/√d, so cubecl keeps its default-scale kernels.

pub(crate) mod flex;

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, TensorData, TensorPrimitive, activation::softmax, backend::Backend};

use crate::clex::ClexBackend;

/// Which keys each query may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMask {
    /// Queries are the last `seq` of the `n` keys and see keys up to their own position
    /// (the causal mask with offset `n − seq`).
    pub causal: bool,
    /// Leading keys no query of a batch row may see (left padding), one entry per row;
    /// empty when no row is padded.
    pub pads: Vec<usize>,
    /// Sliding window (Mixtral): a query at position i sees keys j with i − window < j.
    pub window: Option<usize>,
}

impl KeyMask {
    /// Causal, no padding.
    pub fn causal() -> Self {
        KeyMask { causal: true, pads: Vec::new(), window: None }
    }

    /// Causal, with `pads[row]` leading pad keys per row (dropped when all are 0).
    pub fn causal_padded(pads: &[usize]) -> Self {
        let pads = if pads.iter().all(|&p| p == 0) { Vec::new() } else { pads.to_vec() };
        KeyMask { causal: true, pads, window: None }
    }

    /// The same mask with a sliding window of `window` keys (`None`: unbounded).
    pub fn with_window(self, window: Option<usize>) -> Self {
        KeyMask { window, ..self }
    }

    /// Leading pad keys of `row`.
    fn pad(&self, row: usize) -> usize {
        self.pads.get(row).copied().unwrap_or(0)
    }

    /// The mask as a tensor, true where masked, `[rows, 1, seq, n]` (rows: 1 without
    /// padding); `None` when nothing is masked.
    fn tensor<B: Backend>(&self, seq: usize, n: usize, device: &B::Device) -> Option<Tensor<B, 4, Bool>> {
        let causal = self.causal && seq > 1;
        let windowed = self.window.is_some_and(|w| w < n);
        if !causal && !windowed && self.pads.is_empty() {
            return None;
        }
        let rows = self.pads.len().max(1);
        let keys = Tensor::<B, 1, Int>::arange(0..n as i64, device).unsqueeze_dim::<2>(0).expand([seq, n]);
        let queries = Tensor::<B, 1, Int>::arange((n - seq) as i64..n as i64, device).unsqueeze_dim::<2>(1).expand([seq, n]);
        let mut seen = if causal { keys.clone().greater(queries.clone()) } else { keys.clone().lower_elem(0) };
        if let Some(w) = self.window.filter(|_| windowed) {
            seen = seen.bool_or(keys.add_scalar(w as i64).lower_equal(queries));
        }
        let mut mask = seen.unsqueeze_dim::<3>(0).expand([rows, seq, n]);
        if !self.pads.is_empty() {
            let pads = TensorData::new(self.pads.iter().map(|&p| p as i64).collect::<Vec<_>>(), [rows]);
            let pads = Tensor::<B, 1, Int>::from_data(pads, device).unsqueeze_dim::<2>(1).expand([rows, n]);
            let keys = Tensor::<B, 1, Int>::arange(0..n as i64, device).unsqueeze_dim::<2>(0).expand([rows, n]);
            mask = mask.bool_or(keys.lower(pads).unsqueeze_dim::<3>(1).expand([rows, seq, n]));
        }
        Some(mask.unsqueeze_dim::<4>(1))
    }
}

/// Attention of `q` over keys `k` and values `v`; query head `h` reads KV head
/// `h / (heads / kv_heads)` (HF's `repeat_kv` order).
///
/// # Shapes
/// - `q`: `[batch, seq, heads, d]`, already scaled by any log scale
/// - `k`, `v`: `[batch, n, kv_heads, d]` (`n >= seq`; may be views of a larger cache)
/// - returns `[batch, seq, heads, d]`
pub fn attention<B: ClexBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: &KeyMask) -> Tensor<B, 4> {
    let out = B::grouped_attention(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), mask);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Writes `new` into `cache` at sequence position `at` and returns the cache: in place where
/// the backend can ([`ClexBackend::kv_write`]).
///
/// # Shapes
/// - `cache`: `[batch, capacity, kv_heads, d]`; `new`: `[batch, seq, kv_heads, d]`, `at + seq <= capacity`
pub fn kv_write<B: ClexBackend>(cache: Tensor<B, 4>, new: Tensor<B, 4>, at: usize) -> Tensor<B, 4> {
    let out = B::kv_write(cache.into_primitive().tensor(), new.into_primitive().tensor(), at);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `[b, n, kv_heads, d]` → `[b, n, heads, d]`: each KV head repeated for the queries it serves.
/// Repeating a size-1 dim copies whole rows, where reshaping an expanded view would copy
/// element by element.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, n, kvh, d] = x.dims();
    if kvh == heads {
        return x;
    }
    x.unsqueeze_dim::<5>(3).repeat_dim(3, heads / kvh).reshape([b, n, heads, d])
}

/// burn's fused attention op (cubecl flash kernels, libtorch SDPA), with KV heads repeated to
/// the query heads (the op has no grouped form) and `is_causal` unless rows are padded.
pub fn fused<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: &KeyMask) -> Tensor<B, 4> {
    let [_, seq, heads, _] = q.dims();
    let n = k.dims()[1];
    let k = repeat_kv(k, heads).swap_dims(1, 2);
    let v = repeat_kv(v, heads).swap_dims(1, 2);
    let plain = mask.pads.is_empty() && mask.window.is_none_or(|w| w >= n);
    let (mask_t, is_causal) = if plain { (None, mask.causal && seq > 1) } else { (mask.tensor::<B>(seq, n, &q.device()), false) };
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal };
    burn_attention(q.swap_dims(1, 2), k, v, mask_t, None, opts).swap_dims(1, 2)
}

/// Scores, mask and softmax in f32 whatever the compute dtype (as transformers' eager path),
/// then the value product: differentiable, and what the other paths are tested against.
/// The mask value is a large finite f32, so rows that are all padding stay finite.
///
/// One query row makes both products vector-matrix products over the key length, which some
/// backends cannot run at every length ([`ClexBackend::GEMV_ANY_LENGTH`]): there a copied
/// second row (dropped after) makes them general matmuls.
pub fn explicit<B: ClexBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: &KeyMask) -> Tensor<B, 4> {
    let [b, s, heads, d] = q.dims();
    let n = k.dims()[1];
    let q = q.swap_dims(1, 2);
    let k = repeat_kv(k, heads).swap_dims(1, 2);
    let v = repeat_kv(v, heads).swap_dims(1, 2);
    let rows = if s == 1 && !B::GEMV_ANY_LENGTH { 2 } else { s };
    let q = if rows != s { q.repeat_dim(2, 2) } else { q };
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (d as f64).sqrt());
    let dtype = scores.dtype();
    let scores = if dtype == DType::F32 { scores } else { scores.cast(FloatDType::F32) };
    let scores = match mask.tensor::<B>(s, n, &scores.device()) {
        Some(m) => {
            let m = if rows != s { m.repeat_dim(2, 2) } else { m };
            let m = m.expand([b, heads, rows, n]);
            scores.mask_fill(m, -1.0e30)
        }
        None => scores,
    };
    let probs = softmax(scores, 3);
    let probs = if dtype == DType::F32 { probs } else { probs.cast(dtype) };
    let out = probs.matmul(v);
    let out = if rows == s { out } else { out.narrow(2, 0, s) };
    out.swap_dims(1, 2)
}

/// [`ClexBackend::grouped_attention`]'s default: burn's fused op where its meaning is the
/// same on every backend, the explicit path elsewhere:
/// - a query block with no cached keys before it (`seq == n`) or one query (`seq == 1`,
///   where the backend's vector-matrix products take any length): fused. Between, a causal mask must be aligned to the bottom right, and libtorch's SDPA
///   (what burn-tch 0.21 passes `is_causal` to) aligns it to the top left;
/// - left padding or an active sliding window: explicit. burn-tch hands burn's boolean mask
///   (true: masked) to SDPA, where true means attended; and a fused op may return NaN for a
///   query that sees no key (SDPA does), which a pad position's value would carry into real
///   rows through 0·NaN in the next layer's value product.
pub(crate) fn default_attention<B: ClexBackend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, mask: &KeyMask) -> FloatTensor<B> {
    let t = |p| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
    let (q, k, v) = (t(q), t(k), t(v));
    let (seq, n) = (q.dims()[1], k.dims()[1]);
    // One query row on a backend whose vector-matrix products refuse some lengths
    // (`GEMV_ANY_LENGTH`: cubecl's attention falls back to such products there) takes the
    // explicit path, which makes them general matmuls.
    let one_row = seq == 1 && B::GEMV_ANY_LENGTH;
    let plain = mask.pads.is_empty() && mask.window.is_none_or(|w| w >= n) && (one_row || (seq == n && seq > 1));
    let out = if plain { fused(q, k, v, mask) } else { explicit(q, k, v, mask) };
    out.into_primitive().tensor()
}

/// [`ClexBackend::kv_write`]'s default: burn's `slice_assign` (in place on backends that
/// write into a uniquely held buffer, a copy of the cache on others).
pub(crate) fn default_kv_write<B: Backend>(cache: FloatTensor<B>, new: FloatTensor<B>, at: usize) -> FloatTensor<B> {
    let cache = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(cache));
    let new = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(new));
    let [b, s, kvh, d] = new.dims();
    cache.slice_assign([0..b, at..at + s, 0..kvh, 0..d], new).into_primitive().tensor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    fn seq(shape: [usize; 4], salt: f32) -> Tensor<Flex, 4> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.37 + salt).sin() * 1.3).tanh()).collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    #[test]
    fn mask_tensor_is_causal_with_offset_and_pads() {
        let m = KeyMask::causal_padded(&[0, 2]).tensor::<Flex>(2, 5, &Default::default()).unwrap();
        assert_eq!(m.dims(), [2, 1, 2, 5]);
        let v: Vec<bool> = m.into_data().to_vec().unwrap();
        // Row 0: queries at 3, 4 see keys <= 3, <= 4; row 1 also loses keys 0, 1.
        let want = [
            [false, false, false, false, true],
            [false, false, false, false, false],
            [true, true, false, false, true],
            [true, true, false, false, false],
        ];
        assert_eq!(v, want.concat());
    }

    #[test]
    fn fused_equals_explicit_with_gqa_offset_and_pads() {
        let q = seq([2, 3, 4, 8], 0.1);
        let k = seq([2, 7, 2, 8], 0.7);
        let v = seq([2, 7, 2, 8], 1.9);
        for mask in [KeyMask::causal(), KeyMask::causal_padded(&[0, 3]), KeyMask::default(), KeyMask::causal().with_window(Some(3))] {
            let a = fused(q.clone(), k.clone(), v.clone(), &mask);
            let b = explicit(q.clone(), k.clone(), v.clone(), &mask);
            let diff = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-6, "{mask:?}: {diff}");
        }
    }

    fn max_diff(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        (a.cast(FloatDType::F32) - b.cast(FloatDType::F32)).abs().max().into_scalar()
    }

    /// Our flex kernel (through the backend trait) against the explicit path: prefill, cached
    /// chunks and decode steps, grouped heads, padding, key splits (long n, one row) and the
    /// GEMM tiles (many rows), with keys and values read from a prefix view of a larger cache.
    /// The kernel's task split depends on the threads (per KV head, or every head per task
    /// with split keys when there are few tasks), so each case runs on 1, 2 and 8 threads.
    #[test]
    fn flex_kernel_equals_explicit() {
        for threads in [1, 2, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(kernel_cases);
        }
    }

    fn kernel_cases() {
        let cases = [
            // (batch, seq, n, heads, kv_heads, d, pads, window)
            (1, 5, 5, 2, 2, 8, vec![], None),
            (1, 9, 9, 2, 1, 8, vec![], Some(4)),
            (1, 40, 200, 3, 1, 64, vec![], Some(70)),
            (1, 1, 1600, 4, 2, 16, vec![], Some(1000)),
            (1, 1, 9, 4, 2, 8, vec![], None),
            (2, 3, 11, 6, 2, 16, vec![0, 4], None),
            (1, 40, 40, 3, 1, 64, vec![], None),   // 120 rows per task: GEMM tiles
            (1, 1, 3000, 9, 3, 64, vec![], None),  // one row, long: split keys
            (1, 70, 2100, 4, 4, 32, vec![], None), // chunked prefill over a long cache
            (2, 1, 1500, 4, 2, 16, vec![7, 0], None),
            (1, 1, 700, 7, 1, 40, vec![], None),      // 7 rows: dot groups 4 + 3, value lanes 32 + 8
            (1, 2, 300, 6, 2, 12, vec![], Some(200)), // d not a multiple of 8: the scalar tails
        ];
        for (b, s, n, h, kvh, d, pads, window) in cases {
            let q = seq([b, s, h, d], 0.3);
            // A cache with room for 17 more tokens, read through a prefix view.
            let kc = seq([b, n + 17, kvh, d], 1.1);
            let vc = seq([b, n + 17, kvh, d], 2.3);
            let (k, v) = (kc.narrow(1, 0, n), vc.narrow(1, 0, n));
            let mask = KeyMask::causal_padded(&pads).with_window(window);
            let want = explicit(q.clone(), k.clone(), v.clone(), &mask);
            let prim = |t: &Tensor<Flex, 4>| t.clone().into_primitive().tensor();
            assert!(flex::attention(&prim(&q), &prim(&k), &prim(&v), &mask).is_some(), "the kernel reads a prefix view in place");
            let got = attention(q.clone(), k.clone(), v.clone(), &mask);
            let diff = max_diff(got, want.clone());
            assert!(diff < 1e-5, "b {b} s {s} n {n} h {h}/{kvh} d {d} pads {pads:?}: {diff}");
            for dtype in [FloatDType::F16, FloatDType::BF16] {
                let got = attention(q.clone().cast(dtype), k.clone().cast(dtype), v.clone().cast(dtype), &mask);
                let tol = if dtype == FloatDType::F16 { 4e-3 } else { 3e-2 };
                let diff = max_diff(got, want.clone());
                assert!(diff < tol, "{dtype:?} b {b} s {s} n {n}: {diff}");
            }
        }
    }

    #[test]
    fn flex_kv_write_is_in_place_unless_shared() {
        let cache = Tensor::<Flex, 4>::zeros([2, 8, 3, 4], &Default::default());
        let new = seq([2, 2, 3, 4], 0.5);
        let ptr = |t: &Tensor<Flex, 4>| t.clone().into_primitive().tensor().bytes().as_ptr() as usize;
        let before = ptr(&cache);
        let cache = kv_write(cache, new.clone(), 5);
        assert_eq!(ptr(&cache), before, "a uniquely held cache is written in place");
        assert_eq!(max_diff(cache.clone().narrow(1, 5, 2), new.clone()), 0.0);
        assert_eq!(cache.clone().narrow(1, 0, 5).abs().max().into_scalar(), 0.0);
        // A shared cache (a cloned session) is copied, and the other holder keeps its data.
        let shared = cache.clone();
        let written = kv_write(cache, seq([2, 1, 3, 4], 9.0), 0);
        assert_ne!(ptr(&written), ptr(&shared));
        assert_eq!(shared.narrow(1, 0, 1).abs().max().into_scalar(), 0.0);
    }
}
