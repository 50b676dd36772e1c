//! burn-flex's attention kernel and in-place KV-cache write.
//!
//! The kernel reads queries, keys and values where they lie (the keys and values usually a
//! prefix view of a preallocated cache, `[batch, capacity, kv_heads, d]`), so a decode step
//! reads the cache once and copies none of it. Work is split into tasks of one batch row,
//! one KV head and a block of query positions; the query rows of a task are every head of
//! the group at every position of the block, so grouped heads share each key and value read
//! (no repeated KV). When there are fewer tasks than threads can use (decoding), a task
//! takes every KV head, so each tile of keys is one contiguous stretch of the cache rather
//! than one head's share of every row, and its keys are split into ranges whose partial
//! softmax results are merged after (as flash-decoding does). Scores, softmax and the value
//! accumulation run in f32 for every storage dtype; f32 keys and values are read in place,
//! half ones converted tile by tile into f32 scratch.
//! Large blocks multiply through the `gemm` crate (burn-flex's own GEMM), small ones (a
//! decode step's few rows) through dot products compiled for AVX2 where the CPU has it.

use burn::tensor::{DType, Element, bf16, f16};
use burn_flex::{FlexTensor, Layout};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::KeyMask;

/// Keys per tile: a tile of keys and one of values (64 × 128 × 4 bytes each at d = 128)
/// stay in L1/L2 while every query row of the task reads them.
const TILE: usize = 64;
/// Query positions per task in a prefill: rows = positions × grouped heads.
const QUERY_BLOCK: usize = 32;
/// Fewest keys one split of a task covers (below this, merging costs more than it saves).
const MIN_SPLIT: usize = 512;
/// Rows from which the products go through GEMM rather than dot products.
const GEMM_ROWS: usize = 8;
/// Keys per block of a decode step's value sums: the block's rows of every head (6 KiB at
/// SmolLM2's 3 × 64) are read while they are in L1, and each head's accumulators are loaded
/// and stored once per block rather than once per key.
const VALUE_BLOCK: usize = 8;

/// Storage types the kernel reads and writes; computation is in f32.
trait Elem: Element + bytemuck::Pod + Send + Sync {
    fn load(self) -> f32;
    fn store(x: f32) -> Self;
    /// `dst = src` in f32: a copy, or half's slice conversion (F16C where the CPU has it),
    /// where element-wise conversion would be a call per element.
    fn load_slice(src: &[Self], dst: &mut [f32]);
    /// `src` itself when it already is f32 (read in place, no scratch copy).
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
}

impl Elem for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn load_slice(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        Some(src)
    }
}

/// The half types: scalar conversions, and half's slice conversion for rows.
macro_rules! half_elem {
    ($t:ty) => {
        impl Elem for $t {
            #[inline(always)]
            fn load(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline(always)]
            fn store(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            #[inline(always)]
            fn load_slice(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst);
            }
            #[inline(always)]
            fn as_f32(_: &[Self]) -> Option<&[f32]> {
                None
            }
        }
    };
}

half_elem!(f16);
half_elem!(bf16);

/// A rank-4 tensor's storage and element strides; the last dim must be contiguous.
struct View<'a, E> {
    data: &'a [E],
    offset: usize,
    strides: [usize; 3],
    dims: [usize; 4],
}

impl<'a, E: Elem> View<'a, E> {
    /// `None` when the layout has a non-unit last stride or negative strides.
    fn new(t: &'a FlexTensor) -> Option<Self> {
        let layout: &Layout = t.layout();
        let s = layout.strides();
        let shape = layout.shape();
        if s.len() != 4 || s[3] != 1 || s.iter().any(|&x| x < 0) {
            return None;
        }
        Some(View {
            data: t.storage::<E>(),
            offset: layout.start_offset(),
            strides: [s[0] as usize, s[1] as usize, s[2] as usize],
            dims: [shape[0], shape[1], shape[2], shape[3]],
        })
    }

    /// The `d` elements at `[b, i, h, ..]`.
    #[inline(always)]
    fn row(&self, b: usize, i: usize, h: usize) -> &'a [E] {
        &self.from(b, i, h)[..self.dims[3]]
    }

    /// The storage from `[b, i, h, 0]` on: row `i + j` of head `h` starts `j · strides[1]`
    /// elements in.
    #[inline(always)]
    fn from(&self, b: usize, i: usize, h: usize) -> &'a [E] {
        &self.data[self.offset + b * self.strides[0] + i * self.strides[1] + h * self.strides[2]..]
    }

    /// Rows `i..i + len` of head `h` in f32 and their stride: the storage itself for f32,
    /// else converted into `scratch` (stride d).
    #[inline(always)]
    fn tile<'s>(&self, b: usize, i: usize, len: usize, h: usize, scratch: &'s mut [f32]) -> (&'s [f32], usize)
    where
        'a: 's,
    {
        if let Some(rows) = E::as_f32(self.from(b, i, h)) {
            return (rows, self.strides[1]);
        }
        let d = self.dims[3];
        for j in 0..len {
            E::load_slice(self.row(b, i + j, h), &mut scratch[j * d..(j + 1) * d]);
        }
        (scratch, d)
    }

    /// [`View::tile`] for each head of `heads`, each converting into its own equal part of
    /// `scratch` (empty when the storage is f32).
    fn head_tiles<'s>(
        &self,
        b: usize,
        i: usize,
        len: usize,
        heads: std::ops::Range<usize>,
        scratch: &'s mut [f32],
    ) -> Vec<(&'s [f32], usize)>
    where
        'a: 's,
    {
        let part = scratch.len() / heads.len().max(1);
        let mut rest = scratch;
        heads
            .map(|h| {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(part);
                rest = tail;
                self.tile(b, i, len, h, mine)
            })
            .collect()
    }
}

/// One task: batch row `b`, KV heads `g0..g1`, query positions `q0..q1`, keys `k0..k1`.
#[derive(Debug, Clone, Copy)]
struct Task {
    b: usize,
    g0: usize,
    g1: usize,
    q0: usize,
    q1: usize,
    k0: usize,
    k1: usize,
}

/// A task's unnormalised result: per row the running max, the sum of exponentials and the
/// weighted value sum `[rows, d]`.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
}

/// The kernel; `None` when a dtype or layout is not one it reads (the caller falls back to
/// burn's op).
///
/// # Shapes
/// - `q`: `[batch, seq, heads, d]`; `k`, `v`: `[batch, n, kv_heads, d]`
/// - returns `[batch, seq, heads, d]`, contiguous
pub(crate) fn attention(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, mask: &KeyMask) -> Option<FlexTensor> {
    if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
        return None;
    }
    match q.dtype() {
        DType::F32 => run::<f32>(q, k, v, mask),
        DType::F16 => run::<f16>(q, k, v, mask),
        DType::BF16 => run::<bf16>(q, k, v, mask),
        _ => None,
    }
}

fn run<E: Elem>(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, mask: &KeyMask) -> Option<FlexTensor> {
    let (qv, kv, vv) = (View::<E>::new(q)?, View::<E>::new(k)?, View::<E>::new(v)?);
    let [batch, seq, heads, d] = qv.dims;
    let [kb, n, kv_heads, kd] = kv.dims;
    if kb != batch || kd != d || vv.dims != kv.dims || kv_heads == 0 || heads % kv_heads != 0 || n < seq {
        return None;
    }
    let rep = heads / kv_heads;
    let past = n - seq;
    let scale = 1.0 / (d as f32).sqrt();

    // Tasks: (row, KV head, query block), each over the keys its block may see; with too
    // few of those for the threads (decoding), one task takes every KV head.
    let threads = rayon::current_num_threads().max(1);
    let per_head = batch * kv_heads * seq.div_ceil(QUERY_BLOCK) >= 2 * threads;
    let groups: Vec<(usize, usize)> = if per_head { (0..kv_heads).map(|g| (g, g + 1)).collect() } else { vec![(0, kv_heads)] };
    let mut tasks = Vec::new();
    for b in 0..batch {
        let first = mask.pad(b).min(n);
        for &(g0, g1) in &groups {
            for q0 in (0..seq).step_by(QUERY_BLOCK) {
                let q1 = (q0 + QUERY_BLOCK).min(seq);
                let k1 = if mask.causal { past + q1 } else { n };
                // The block's first query sees the oldest keys any of its rows may see.
                let k0 = match mask.window {
                    Some(w) => first.max((past + q0 + 1).saturating_sub(w)),
                    None => first,
                };
                tasks.push(Task { b, g0, g1, q0, q1, k0: k0.min(k1), k1 });
            }
        }
    }
    if tasks.is_empty() {
        return None; // an empty batch: burn's op returns the empty tensor
    }
    // Too few tasks for the threads (a decode step): split each one's keys.
    let splits = if tasks.len() >= 2 * threads { 1 } else { (2 * threads).div_ceil(tasks.len()).min(n / MIN_SPLIT).max(1) };
    let work: Vec<Task> = tasks
        .iter()
        .flat_map(|t| {
            let len = t.k1 - t.k0;
            (0..splits).map(move |i| Task { k0: t.k0 + len * i / splits, k1: t.k0 + len * (i + 1) / splits, ..*t })
        })
        .collect();
    let ctx = Ctx { q: &qv, k: &kv, v: &vv, rep, past, scale, causal: mask.causal, window: mask.window };
    let partials: Vec<Partial> = work.par_iter().map(|t| ctx.task(t)).collect();

    let mut out = vec![E::store(0.0); batch * seq * heads * d];
    for (t, parts) in tasks.iter().zip(partials.chunks(splits)) {
        let rows = (t.q1 - t.q0) * rep;
        for r in 0..(t.g1 - t.g0) * rows {
            let m = parts.iter().map(|p| p.max[r]).fold(f32::NEG_INFINITY, f32::max);
            let (gi, pr) = (r / rows, r % rows);
            let (i, h) = (t.q0 + pr / rep, (t.g0 + gi) * rep + pr % rep);
            let dst = &mut out[((t.b * seq + i) * heads + h) * d..][..d];
            if m == f32::NEG_INFINITY {
                continue; // every key masked: zeros, as burn's op gives
            }
            let mut sum = 0.0;
            let mut acc = vec![0.0f32; d];
            for p in parts {
                if p.max[r] == f32::NEG_INFINITY {
                    continue;
                }
                let c = (p.max[r] - m).exp();
                sum += p.sum[r] * c;
                for (a, x) in acc.iter_mut().zip(&p.acc[r * d..(r + 1) * d]) {
                    *a += x * c;
                }
            }
            for (o, a) in dst.iter_mut().zip(acc) {
                *o = E::store(a / sum);
            }
        }
    }
    Some(FlexTensor::new(
        burn::tensor::Bytes::from_elems(out),
        Layout::contiguous(burn::tensor::Shape::new([batch, seq, heads, d])),
        E::dtype(),
    ))
}

/// What every task reads.
struct Ctx<'a, 'b, E> {
    q: &'b View<'a, E>,
    k: &'b View<'a, E>,
    v: &'b View<'a, E>,
    rep: usize,
    past: usize,
    scale: f32,
    causal: bool,
    window: Option<usize>,
}

impl<E: Elem> Ctx<'_, '_, E> {
    fn task(&self, t: &Task) -> Partial {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.task_avx2(t) };
        }
        self.task_body::<false>(t)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn task_avx2(&self, t: &Task) -> Partial {
        self.task_body::<true>(t)
    }

    /// Online softmax over the task's keys, tile by tile. With few rows (decoding) a tile is
    /// read key by key across the task's heads, so the cache is streamed in storage order.
    /// `AVX2`: the caller checked that the CPU has AVX2 and FMA.
    #[inline(always)]
    fn task_body<const AVX2: bool>(&self, t: &Task) -> Partial {
        let d = self.q.dims[3];
        // Rows of one head (position-major: row r is position q0 + r / rep, head g·rep +
        // r % rep); the task's rows are its heads' rows one after another.
        let rows = (t.q1 - t.q0) * self.rep;
        let heads = t.g1 - t.g0;
        let all = heads * rows;
        // Query rows pre-scaled by 1/√d.
        let mut q = vec![0.0f32; all * d];
        for (row, dst) in q.chunks_exact_mut(d).enumerate() {
            let (gi, r) = (row / rows, row % rows);
            let src = self.q.row(t.b, t.q0 + r / self.rep, (t.g0 + gi) * self.rep + r % self.rep);
            for (x, s) in dst.iter_mut().zip(src) {
                *x = s.load() * self.scale;
            }
        }
        let mut part = Partial { max: vec![f32::NEG_INFINITY; all], sum: vec![0.0; all], acc: vec![0.0; all * d] };
        // Scratch for half keys and values, one tile per head; f32 ones are read in place.
        let scratch = if E::as_f32(&[]).is_some() { 0 } else { TILE * d };
        let (mut kt, mut vt) = (vec![0.0f32; heads * scratch], vec![0.0f32; heads * scratch]);
        let mut scores = vec![0.0f32; all * TILE];
        let mut j0 = t.k0;
        while j0 < t.k1 {
            let len = TILE.min(t.k1 - j0);
            let keys = self.k.head_tiles(t.b, j0, len, t.g0..t.g1, &mut kt);
            let values = self.v.head_tiles(t.b, j0, len, t.g0..t.g1, &mut vt);
            let s = &mut scores[..all * len];
            if rows >= GEMM_ROWS {
                for (gi, &(k, ks)) in keys.iter().enumerate() {
                    // s[rows, len] = q[rows, d] · k[len, d]ᵀ (k read column by column)
                    let (q, s) = (&q[gi * rows * d..(gi + 1) * rows * d], &mut s[gi * rows * len..(gi + 1) * rows * len]);
                    small_gemm(rows, len, d, s, false, q, k, 1, ks);
                }
            } else {
                // Key by key across the heads: storage order when the task has every head.
                for j in 0..len {
                    for (gi, &(k, ks)) in keys.iter().enumerate() {
                        let kr = &k[j * ks..j * ks + d];
                        let qh = &q[gi * rows * d..(gi + 1) * rows * d];
                        #[cfg(target_arch = "x86_64")]
                        if AVX2 {
                            // SAFETY: AVX2 is only set after the CPU was checked for AVX2 and FMA.
                            unsafe { dots_avx2(qh, kr, &mut s[gi * rows * len + j..], len) };
                            continue;
                        }
                        for (r, qr) in qh.chunks_exact(d).enumerate() {
                            s[(gi * rows + r) * len + j] = dot(qr, kr);
                        }
                    }
                }
            }
            for row in 0..all {
                let pos = self.past + t.q0 + (row % rows) / self.rep;
                // The row sees tile keys lo..hi: none past its own position (causal), none
                // older than its window.
                let hi = if self.causal { (pos + 1).saturating_sub(j0).min(len) } else { len };
                let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w).saturating_sub(j0)).min(hi);
                let sr = &mut s[row * len..(row + 1) * len];
                if lo == hi {
                    sr.fill(0.0);
                    continue;
                }
                let m = part.max[row].max(max_of(&sr[lo..hi]));
                for x in sr[lo..hi].iter_mut() {
                    *x = exp_nonpositive(*x - m);
                }
                let tile_sum = sum_of(&sr[lo..hi]);
                sr[..lo].fill(0.0);
                sr[hi..].fill(0.0);
                let c = (part.max[row] - m).exp(); // 0 on the first visible tile
                if c != 1.0 {
                    for a in part.acc[row * d..(row + 1) * d].iter_mut() {
                        *a *= c;
                    }
                }
                part.sum[row] = part.sum[row] * c + tile_sum;
                part.max[row] = m;
            }
            if rows >= GEMM_ROWS {
                for (gi, &(v, vs)) in values.iter().enumerate() {
                    // acc[rows, d] += s[rows, len] · v[len, d]
                    let (s, acc) = (&s[gi * rows * len..(gi + 1) * rows * len], &mut part.acc[gi * rows * d..(gi + 1) * rows * d]);
                    small_gemm(rows, d, len, acc, true, s, v, vs, 1);
                }
            } else {
                // Blocks of a few keys across the heads (near storage order); within a block
                // the AVX2 path keeps each head's accumulators in registers.
                for b0 in (0..len).step_by(VALUE_BLOCK) {
                    let b1 = (b0 + VALUE_BLOCK).min(len);
                    for (gi, &(v, vs)) in values.iter().enumerate() {
                        let acc = &mut part.acc[gi * rows * d..(gi + 1) * rows * d];
                        let p = &s[gi * rows * len..(gi + 1) * rows * len];
                        #[cfg(target_arch = "x86_64")]
                        if AVX2 {
                            // SAFETY: AVX2 is only set after the CPU was checked for AVX2 and FMA.
                            unsafe { accumulate_avx2(acc, p, len, b0..b1, v, vs) };
                            continue;
                        }
                        for j in b0..b1 {
                            let vr = &v[j * vs..j * vs + d];
                            for (a, pr) in acc.chunks_exact_mut(d).zip(p.chunks_exact(len)) {
                                axpy(a, pr[j], vr);
                            }
                        }
                    }
                }
            }
            j0 += len;
        }
        part
    }
}

/// eˣ for x ≤ 0 (scores minus their running max), in straight-line arithmetic the compiler
/// vectorises, where libm's `expf` is a call per element (a long prefill's softmax spent
/// as long in `expf` as in its two GEMMs). Cephes' `expf` reduction and polynomial: within
/// 2 ulp of `f32::exp` above −87.3, 0 below (where eˣ < 2⁻¹²⁶ is negligible next to the
/// row's maximum term, 1).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as Cephes publishes them
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let under = x < -87.3;
    let x = x.max(-87.3);
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // 2ⁿ from its exponent bits (n ≥ −126 after the clamp).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if under { 0.0 } else { y * scale }
}

/// The largest element, over eight lanes (vectorised by the compiler).
#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for c in chunks {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    rest.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Σ xᵢ over eight lanes (vectorised by the compiler).
#[inline(always)]
fn sum_of(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().chain(rest).sum()
}

/// Σ aᵢbᵢ with eight independent partial sums (vectorised by the compiler).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// [`dot`] in AVX2 with fused multiply-adds: LLVM vectorises `dot` to 4-lane products and
/// shuffles (perf annotate, 2026-12-01), which made a long-context decode step compute-bound.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY (loads): every load reads 8 floats at i with i + 8 ≤ n.
    while i + 16 <= n {
        s0 = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(pa.add(i)) }, unsafe { _mm256_loadu_ps(pb.add(i)) }, s0);
        s1 = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(pa.add(i + 8)) }, unsafe { _mm256_loadu_ps(pb.add(i + 8)) }, s1);
        i += 16;
    }
    if i + 8 <= n {
        s0 = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(pa.add(i)) }, unsafe { _mm256_loadu_ps(pb.add(i)) }, s0);
        i += 8;
    }
    let s = _mm256_add_ps(s0, s1);
    let x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    let x = _mm_add_ss(x, _mm_shuffle_ps::<1>(x, x));
    let mut r = _mm_cvtss_f32(x);
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        r += x * y;
    }
    r
}

/// `out[r · stride] = q_r · k` for each row `q_r` of `q` (rows of `k.len()`), four rows at a
/// time: each 8-lane slice of the key is loaded once for the four rows and the four sums are
/// reduced together, where one [`dot_avx2`] per row loaded the key and reduced once per row
/// (a long-context decode step was compute-bound on that).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(q: &[f32], k: &[f32], out: &mut [f32], stride: usize) {
    let d = k.len();
    let rows = q.len() / d.max(1);
    assert!(rows == 0 || (rows - 1) * stride < out.len());
    if !d.is_multiple_of(8) {
        for (r, qr) in q.chunks_exact(d).enumerate() {
            // SAFETY: the caller's CPU has AVX2 and FMA (this function's own contract).
            out[r * stride] = unsafe { dot_avx2(qr, k) };
        }
        return;
    }
    let mut r = 0;
    while r < rows {
        let n = (rows - r).min(4);
        let rq = &q[r * d..(r + n) * d];
        // SAFETY: `rq` holds n rows of d, d a multiple of 8; the CPU has AVX2 and FMA.
        let sums = unsafe {
            match n {
                4 => dots_group::<4>(rq, k),
                3 => dots_group::<3>(rq, k),
                2 => dots_group::<2>(rq, k),
                _ => dots_group::<1>(rq, k),
            }
        };
        for (i, &x) in sums[..n].iter().enumerate() {
            out[(r + i) * stride] = x;
        }
        r += n;
    }
}

/// The `R` (≤ 4) dot products of [`dots_avx2`]; `q` holds exactly `R` rows of `k.len()`, a
/// multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dots_group<const R: usize>(q: &[f32], k: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let d = k.len();
    debug_assert!(R <= 4 && q.len() == R * d && d.is_multiple_of(8));
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < d {
        // SAFETY: i + 8 ≤ d, so both loads stay in row r of q and in k.
        let kv = unsafe { _mm256_loadu_ps(kp.add(i)) };
        for (r, a) in acc.iter_mut().enumerate().take(R) {
            *a = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(qp.add(r * d + i)) }, kv, *a);
        }
        i += 8;
    }
    // [a, b, c, d] lane sums: two rounds of pairwise adds, then the two 128-bit halves.
    let t = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
    let s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
    let mut out = [0.0f32; 4];
    // SAFETY: `out` has room for the four lanes.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
    out
}

/// `acc_r += Σ_{j ∈ keys} p[r · len + j] · v_j` for each row `r` of `acc` (rows of d), with
/// `v_j = v[j · vs..j · vs + d]` (relative to the block start: `v` begins at key 0). Rows go
/// three at a time and d 32 lanes at a time, so the accumulators stay in registers across
/// the block's keys; a d that is not a multiple of 8 falls back to [`axpy`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(acc: &mut [f32], p: &[f32], len: usize, keys: std::ops::Range<usize>, v: &[f32], vs: usize) {
    if keys.is_empty() || acc.is_empty() {
        return;
    }
    let rows = p.len() / len;
    let d = acc.len() / rows;
    // Every read below: row r < rows of p at key j < keys.end ≤ len, and v up to the last
    // key's row.
    assert!(keys.end <= len && rows * len == p.len() && rows * d == acc.len() && (keys.end - 1) * vs + d <= v.len());
    if !d.is_multiple_of(8) {
        for j in keys {
            for (a, pr) in acc.chunks_exact_mut(d).zip(p.chunks_exact(len)) {
                axpy(a, pr[j], &v[j * vs..j * vs + d]);
            }
        }
        return;
    }
    let mut r = 0;
    while r < rows {
        let n = (rows - r).min(3);
        let mut c = 0;
        while c < d {
            let wide = d - c >= 32;
            let at = Block { acc: acc[r * d + c..].as_mut_ptr(), d, p: p[r * len..].as_ptr(), len, v: v[c..].as_ptr(), vs };
            // SAFETY: rows r..r + n of acc and p exist (asserted); lanes c..c + 32 (or + 8)
            // lie within d; keys within `keys` (asserted against len and v).
            unsafe {
                match (n, wide) {
                    (3, true) => at.run::<3, 4>(keys.clone()),
                    (2, true) => at.run::<2, 4>(keys.clone()),
                    (_, true) => at.run::<1, 4>(keys.clone()),
                    (3, false) => at.run::<3, 1>(keys.clone()),
                    (2, false) => at.run::<2, 1>(keys.clone()),
                    (_, false) => at.run::<1, 1>(keys.clone()),
                }
            }
            c += if wide { 32 } else { 8 };
        }
        r += n;
    }
}

/// Where one register block of [`accumulate_avx2`] reads and writes: `acc` and `p` at its
/// first row (rows `d` and `len` apart), `v` at its first lane of key 0 (keys `vs` apart).
#[cfg(target_arch = "x86_64")]
struct Block {
    acc: *mut f32,
    d: usize,
    p: *const f32,
    len: usize,
    v: *const f32,
    vs: usize,
}

#[cfg(target_arch = "x86_64")]
impl Block {
    /// `R` rows × `8·C` lanes of accumulators, loaded once, updated for every key, stored once.
    ///
    /// # Safety
    /// AVX2 and FMA; rows `0..R` and lanes `0..8·C` in bounds for every key of `keys`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn run<const R: usize, const C: usize>(&self, keys: std::ops::Range<usize>) {
        use std::arch::x86_64::*;
        let mut a = [[_mm256_setzero_ps(); C]; R];
        // SAFETY (every pointer below): the caller's bounds.
        for (r, ar) in a.iter_mut().enumerate() {
            for (c, x) in ar.iter_mut().enumerate() {
                *x = unsafe { _mm256_loadu_ps(self.acc.add(r * self.d + 8 * c)) };
            }
        }
        for j in keys {
            let vj = unsafe { self.v.add(j * self.vs) };
            for (r, ar) in a.iter_mut().enumerate() {
                let w = _mm256_set1_ps(unsafe { *self.p.add(r * self.len + j) });
                for (c, x) in ar.iter_mut().enumerate() {
                    *x = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(vj.add(8 * c)) }, *x);
                }
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (c, x) in ar.iter().enumerate() {
                unsafe { _mm256_storeu_ps(self.acc.add(r * self.d + 8 * c), *x) };
            }
        }
    }
}

/// acc += p·x.
#[inline(always)]
fn axpy(acc: &mut [f32], p: f32, x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += p * v;
    }
}

/// Writes `new` `[batch, seq, kv_heads, d]` into `cache` `[batch, capacity, kv_heads, d]` at
/// position `at`, in place; gives the cache back untouched (`Err`) when it is shared, not
/// contiguous from offset 0, or of another dtype, for the caller's copying fallback.
pub(crate) fn kv_write(mut cache: FlexTensor, new: &FlexTensor, at: usize) -> Result<FlexTensor, FlexTensor> {
    let ok = cache.dtype() == new.dtype() && cache.layout().is_contiguous() && cache.layout().start_offset() == 0;
    let wrote = ok
        && match cache.dtype() {
            DType::F32 => write_rows::<f32>(&mut cache, new, at),
            DType::F16 => write_rows::<f16>(&mut cache, new, at),
            DType::BF16 => write_rows::<bf16>(&mut cache, new, at),
            _ => false,
        };
    if wrote { Ok(cache) } else { Err(cache) }
}

fn write_rows<E: Elem>(cache: &mut FlexTensor, new: &FlexTensor, at: usize) -> bool {
    let cs = cache.layout().shape().clone();
    let (batch, cap, width) = (cs[0], cs[1], cs[2] * cs[3]);
    let new = new.to_contiguous();
    let ns = new.layout().shape();
    if ns[0] != batch || ns[2] * ns[3] != width || at + ns[1] > cap {
        return false;
    }
    let seq = ns[1];
    let src: &[E] = new.storage();
    let Some(dst) = cache.try_storage_mut::<E>() else { return false };
    for b in 0..batch {
        dst[(b * cap + at) * width..][..seq * width].copy_from_slice(&src[b * seq * width..][..seq * width]);
    }
    true
}

/// `dst[m, n] = (dst if accumulate) + lhs[m, k] · R` on one thread through the `gemm` crate
/// (the one burn-flex's matmul uses), all row-major with row strides `n` and `k`, where
/// element (l, j) of R `[k, n]` is `rhs[l * rhs_row + j * rhs_col]`. The bounds the raw
/// pointers rely on are checked here, once for both products of the kernel.
#[allow(clippy::too_many_arguments)]
fn small_gemm(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: &[f32], rhs: &[f32], rhs_row: usize, rhs_col: usize) {
    assert!(m > 0 && n > 0 && k > 0 && dst.len() >= m * n && lhs.len() >= m * k);
    assert!((k - 1) * rhs_row + (n - 1) * rhs_col < rhs.len());
    // SAFETY: the asserts above keep every index the dims and strides reach inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_col as isize,
            rhs_row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    #[test]
    fn exp_is_within_two_ulp_of_libm_on_the_softmax_range() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -88.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            if x < -87.3 {
                assert_eq!(got, 0.0);
                continue;
            }
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs() as f32;
            worst = worst.max(ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
