//! The KV cache CLEX needs, and its policy: what a forward does with the cached keys when
//! the rotary frequencies change with length.
//!
//! CLEX's θ depends on t = ceil(N/P), so keys must be kept un-rotated and re-rotated when t
//! changes (docs/CLEX.md §6.2). Before each forward the model asks [`KvCache::plan`], given
//! the [`FrequencyKey`] of the new total length, which [`Plan`] applies; each layer then
//! hands its new keys and values to [`LayerKv::append`], and [`KvCache::commit`] records the
//! forward. Two policies:
//! - [`CachePolicy::Reference`] (default; what the released checkpoints were evaluated with):
//!   per layer, raw keys and values are cached; a rotated copy of the keys, valid for the
//!   current t, is kept too and rebuilt once when t changes ([`Plan::Rerotate`]), so a decode
//!   step rotates only its own key except at the ceil(N/P) boundaries, where the rotated
//!   buffer is rewritten in place block by block from the raw one (one block of extra
//!   memory). Between boundaries a CLEX step does the same tensor work as a plain-RoPE one
//!   plus one raw-key write. Like the official code, cached values (and the
//!   keys of layers >= 1) keep coming from hidden states computed under the old θ, so after
//!   a t change decoding is not a full recompute. Non-CLEX kinds whose frequencies depend on
//!   length (dynamic NTK, LongRoPE) follow transformers: cached keys keep the rotation they
//!   were made with.
//! - [`CachePolicy::Recompute`]: when the rotary frequencies change, the prefill is re-run
//!   over every token so far under the new θ ([`Plan::Replay`]); decoding then equals a full
//!   forward at every step, at the cost of one prefill per boundary
//!   ([`CacheStats::recomputes`]). With CLEX log scaling (`log_scale: true`) λ(N) changes
//!   with every token, so this policy replays the whole sequence at every step: exact, and
//!   quadratic.

use burn::tensor::{Int, Tensor, backend::Backend};
use clex_core::attention::kv_write;
use clex_core::rope::apply_rotary_seq_major;
use clex_core::{ClexBackend, FrequencyKey};

/// Keys re-rotated per block at a t change: the rotated block is the only extra memory.
const REROTATE_BLOCK: usize = 1024;
/// Smallest capacity a layer's buffers are allocated with (tokens).
const MIN_CAPACITY: usize = 256;

/// How cached keys follow a change of the rotary frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Re-rotate cached raw keys (CLEX) / keep old rotations (others); the reference semantics.
    #[default]
    Reference,
    /// Re-run the prefill over all tokens whenever the frequencies change.
    Recompute,
}

/// Counters of the work the cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Times the cached keys were re-rotated for a new t.
    pub rerotations: usize,
    /// Times the prefill was re-run (Recompute policy).
    pub recomputes: usize,
    /// Tokens pushed through those re-runs.
    pub recomputed_tokens: usize,
    /// Times a layer's buffers were reallocated to grow (the old contents copied once).
    pub grows: usize,
}

/// What one forward does with the cache, decided by [`KvCache::plan`].
#[derive(Debug, Clone)]
pub enum Plan<B: Backend> {
    /// Append the new rotated keys (and, when the cache keeps them, raw keys) and values.
    Append,
    /// The frequencies changed: every cached raw key is rotated again, with these cos/sin
    /// tables for ALL key positions, `[batch or 1, total, rot]`.
    Rerotate {
        /// cos for every key position.
        cos: Tensor<B, 3>,
        /// sin for every key position.
        sin: Tensor<B, 3>,
    },
    /// The frequencies (or λ(N)) changed under [`CachePolicy::Recompute`]: run every token so
    /// far again from an empty cache ([`KvCache::replay`]).
    Replay,
}

/// Where one layer's new keys and values go in a forward.
#[derive(Debug)]
pub enum LayerCache<'a, B: Backend> {
    /// No cache: the keys are the forward's own.
    None,
    /// One cache for the whole batch (a left-padded batch shares its positions and t).
    Shared(&'a mut LayerKv<B>, &'a Plan<B>),
    /// One cache per row: independent sequences, each at its own position and t, decoded as
    /// one batch (continuous batching); only the attention runs row by row.
    PerRow(Vec<RowCache<'a, B>>),
}

/// One row's cache in a [`LayerCache::PerRow`] forward.
#[derive(Debug)]
pub struct RowCache<'a, B: Backend> {
    /// The row's layer cache.
    pub kv: &'a mut LayerKv<B>,
    /// What the row's forward does with it.
    pub plan: &'a Plan<B>,
    /// The row's query scale (CLEX log scaling λ(N) of its own length).
    pub query_scale: Option<f32>,
}

/// One layer's cached tensors: preallocated buffers `[batch, capacity, kv_heads, head_dim]`
/// (sequence-major, so an append is one contiguous write per row) whose first `len`
/// positions are filled. Appends write in place where the backend can
/// ([`clex_core::attention::kv_write`]; burn-flex always, unless a cloned session still
/// shares the buffer, which is then copied once), so a decode step costs its own token, not
/// the cache; attention reads prefix views of the buffers without copying them.
#[derive(Debug, Clone)]
pub struct LayerKv<B: Backend> {
    /// Un-rotated keys (only when re-rotation may be needed).
    raw_k: Option<Tensor<B, 4>>,
    /// Keep un-rotated keys (CLEX under the reference policy).
    keep_raw: bool,
    /// Keys rotated with the current frequencies.
    rot_k: Option<Tensor<B, 4>>,
    /// Values.
    v: Option<Tensor<B, 4>>,
    /// Filled positions.
    len: usize,
    /// Capacity to allocate when the buffers are (re)made, if larger than needed.
    reserve: usize,
    /// Times the buffers grew.
    grows: usize,
}

/// Bytes of the first `len` positions of a `[batch, capacity, heads, d]` buffer.
fn filled_bytes<B: Backend>(t: &Option<Tensor<B, 4>>, len: usize) -> usize {
    t.as_ref()
        .map(|t| {
            let [b, _, h, d] = t.dims();
            b * len * h * d * t.dtype().size()
        })
        .unwrap_or(0)
}

impl<B: ClexBackend> LayerKv<B> {
    fn new(keep_raw: bool) -> Self {
        LayerKv { raw_k: None, keep_raw, rot_k: None, v: None, len: 0, reserve: 0, grows: 0 }
    }

    /// Makes room for `needed` positions in `buf` (shaped like `like`): allocates the
    /// buffer, or a larger one (a quarter more than needed, or the reserve) with the filled
    /// part copied over.
    fn ensure(&mut self, buf: Option<Tensor<B, 4>>, like: &Tensor<B, 4>, needed: usize) -> Tensor<B, 4> {
        let cap = buf.as_ref().map_or(0, |t| t.dims()[1]);
        if needed <= cap {
            return buf.expect("capacity > 0 means a buffer");
        }
        let [b, _, h, d] = like.dims();
        let grown = if cap == 0 { needed } else { needed + needed / 4 };
        let new_cap = grown.max(self.reserve).max(MIN_CAPACITY);
        let fresh = Tensor::<B, 4>::empty([b, new_cap, h, d], (&like.device(), like.dtype()));
        match buf {
            Some(old) if self.len > 0 => {
                self.grows += 1;
                kv_write(fresh, old.narrow(1, 0, self.len), 0)
            }
            _ => fresh,
        }
    }

    /// Writes `new` at position `at` of the buffer in `slot`, growing it first if needed.
    fn write(&mut self, slot: fn(&mut Self) -> &mut Option<Tensor<B, 4>>, new: Tensor<B, 4>, at: usize) {
        let needed = at + new.dims()[1];
        let buf = slot(self).take();
        let buf = self.ensure(buf, &new, needed);
        *slot(self) = Some(kv_write(buf, new, at));
    }

    /// The first `len` positions of a buffer, as a view.
    fn view(t: &Option<Tensor<B, 4>>, len: usize) -> Tensor<B, 4> {
        t.as_ref().expect("written before it is read").clone().narrow(1, 0, len)
    }

    /// Adds one forward's keys and values and returns every key (rotated) and value so far,
    /// as views of the cache's buffers (drop them before the next append, which then writes
    /// in place). `cos`/`sin` rotate the new keys; under [`Plan::Rerotate`] the plan's tables
    /// rotate all, block by block into the rotated-key buffer.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, seq, kv_heads, head_dim]` (`k` un-rotated)
    /// - `cos`, `sin`: `[batch or 1, seq, rot]`
    /// - returns `([batch, len, kv_heads, head_dim], [batch, len, kv_heads, head_dim])`
    pub(crate) fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        cos: &Tensor<B, 3>,
        sin: &Tensor<B, 3>,
        plan: &Plan<B>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let at = self.len;
        let total = at + k.dims()[1];
        match plan {
            // t changed: every cached raw key, rotated once with the new θ.
            Plan::Rerotate { cos: cos_all, sin: sin_all } if self.keep_raw => {
                // Room for every position first, so the blocks below never grow the buffer.
                let rot = self.rot_k.take();
                self.rot_k = Some(self.ensure(rot, &k, total));
                self.write(|l| &mut l.raw_k, k, at);
                for from in (0..total).step_by(REROTATE_BLOCK) {
                    let n = REROTATE_BLOCK.min(total - from);
                    let raw = Self::view(&self.raw_k, total).narrow(1, from, n);
                    let rotated = apply_rotary_seq_major(raw, cos_all.clone().narrow(1, from, n), sin_all.clone().narrow(1, from, n));
                    self.write(|l| &mut l.rot_k, rotated, from);
                }
            }
            _ => {
                if self.keep_raw {
                    self.write(|l| &mut l.raw_k, k.clone(), at);
                }
                self.write(|l| &mut l.rot_k, apply_rotary_seq_major(k, cos.clone(), sin.clone()), at);
            }
        }
        self.write(|l| &mut l.v, v, at);
        self.len = total;
        (Self::view(&self.rot_k, total), Self::view(&self.v, total))
    }

    fn memory_bytes(&self) -> usize {
        filled_bytes(&self.raw_k, self.len) + filled_bytes(&self.rot_k, self.len) + filled_bytes(&self.v, self.len)
    }
}

/// A growable KV cache for a batch of sequences (left-padded to a common length).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    policy: CachePolicy,
    /// Keep raw keys to re-rotate them (CLEX under the reference policy).
    keep_raw: bool,
    /// Queries are scaled by λ(N) (CLEX log scaling): under Recompute a change of the length
    /// λ is taken for replays the sequence.
    length_scaled_queries: bool,
    layers: Vec<LayerKv<B>>,
    /// Every token fed so far `[batch, len]`, kept only under Recompute (it replays them).
    tokens: Option<Tensor<B, 2, Int>>,
    len: usize,
    /// Identity of the rotary frequencies the cached rotated keys were made with.
    key: Option<FrequencyKey>,
    /// The length the frequencies and λ of the last forward were taken for.
    frequency_len: usize,
    /// Leading pad tokens per row, fixed by the first forward.
    pads: Vec<usize>,
    stats: CacheStats,
}

impl<B: ClexBackend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers. `clex`: the model's frequencies
    /// follow a CLEX layer (raw keys are kept for re-rotation under `Reference`);
    /// `length_scaled_queries`: queries are scaled by λ(N) (`Recompute` replays when it changes).
    pub(crate) fn new(policy: CachePolicy, num_layers: usize, clex: bool, length_scaled_queries: bool) -> Self {
        let keep_raw = clex && policy == CachePolicy::Reference;
        KvCache {
            policy,
            keep_raw,
            length_scaled_queries,
            layers: (0..num_layers).map(|_| LayerKv::new(keep_raw)).collect(),
            tokens: None,
            len: 0,
            key: None,
            frequency_len: 0,
            pads: Vec::new(),
            stats: CacheStats::default(),
        }
    }

    /// Tokens cached per row (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The policy.
    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// Work counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats { grows: self.layers.iter().map(|l| l.grows).sum(), ..self.stats }
    }

    /// Leading pad tokens per row, once the first forward has fixed them.
    pub fn pads(&self) -> Option<&[usize]> {
        (!self.is_empty()).then_some(self.pads.as_slice())
    }

    /// Bytes of the cached keys and values (raw and rotated) and token ids, for the
    /// positions filled (buffers are allocated ahead; on burn-flex the untouched part of an
    /// allocation is not resident).
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::memory_bytes).sum::<usize>()
            + self.tokens.as_ref().map(|t| t.shape().num_elements() * t.dtype().size()).unwrap_or(0)
    }

    /// Allocates room for `tokens` positions per row when the buffers are next made or grown,
    /// so a generation of known length never reallocates.
    pub fn reserve(&mut self, tokens: usize) {
        for l in &mut self.layers {
            l.reserve = l.reserve.max(tokens);
        }
    }

    /// What the next forward does with the cache, given the key of the frequencies in force
    /// and the length λ is taken for (`frequency_len`). `all_positions` makes the cos/sin of
    /// every key position (called only when cached keys are re-rotated).
    pub(crate) fn plan(
        &self,
        key: FrequencyKey,
        frequency_len: usize,
        all_positions: impl FnOnce() -> (Tensor<B, 3>, Tensor<B, 3>),
    ) -> Plan<B> {
        if self.is_empty() {
            return Plan::Append;
        }
        let changed = self.key != Some(key);
        let rescaled = self.length_scaled_queries && frequency_len != self.frequency_len;
        match self.policy {
            CachePolicy::Recompute if changed || rescaled => Plan::Replay,
            CachePolicy::Reference if changed && self.keep_raw => {
                let (cos, sin) = all_positions();
                Plan::Rerotate { cos, sin }
            }
            _ => Plan::Append,
        }
    }

    /// Starts a [`Plan::Replay`]: empties the cache (keeping its counters and reserve) and
    /// returns every token so far followed by `tokens`, with the rows' pads, to run from
    /// scratch.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, len + seq]`
    pub(crate) fn replay(&mut self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 2, Int>, Vec<usize>) {
        let all = Tensor::cat(vec![self.tokens.take().expect("a non-empty Recompute cache holds its tokens"), tokens], 1);
        let pads = std::mem::take(&mut self.pads);
        let stats = self.stats();
        let reserve = self.layers.first().map_or(0, |l| l.reserve);
        self.clear();
        self.reserve(reserve);
        self.stats = CacheStats { recomputes: stats.recomputes + 1, recomputed_tokens: stats.recomputed_tokens + all.dims()[1], ..stats };
        (all, pads)
    }

    /// Layer `i`'s tensors.
    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerKv<B> {
        &mut self.layers[i]
    }

    /// Records a forward run under `plan`: its tokens (kept under Recompute only), the
    /// frequencies' key and length, and the pads.
    pub(crate) fn commit(&mut self, tokens: Tensor<B, 2, Int>, key: FrequencyKey, frequency_len: usize, pads: Vec<usize>, plan: &Plan<B>) {
        if matches!(plan, Plan::Rerotate { .. }) {
            self.stats.rerotations += 1;
        }
        self.len += tokens.dims()[1];
        if self.policy == CachePolicy::Recompute {
            self.tokens = Some(match self.tokens.take() {
                Some(old) => Tensor::cat(vec![old, tokens], 1),
                None => tokens,
            });
        }
        self.key = Some(key);
        self.frequency_len = frequency_len;
        self.pads = pads;
    }

    /// Keeps the first `len` positions of every row (nothing when `len` is not below the
    /// length): the buffers stay, later forwards overwrite the rest. Cached keys keep the
    /// rotation they have; the next forward re-rotates them if its t differs (CLEX).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for l in &mut self.layers {
            l.len = len;
        }
        if let Some(t) = self.tokens.take() {
            self.tokens = (len > 0).then(|| t.narrow(1, 0, len));
        }
        self.len = len;
    }

    /// Forgets everything but the policy and the counters (the buffers are freed).
    pub fn clear(&mut self) {
        self.stats.grows = self.stats().grows;
        let n = self.layers.len();
        self.layers = (0..n).map(|_| LayerKv::new(self.keep_raw)).collect();
        self.tokens = None;
        self.len = 0;
        self.key = None;
        self.frequency_len = 0;
        self.pads.clear();
    }
}
