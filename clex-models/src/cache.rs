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
//!   step rotates only its own key except at the ceil(N/P) boundaries. The raw keys are kept
//!   as the chunks the forwards appended ([`RawKeyCache`]) and joined only at a boundary, so
//!   between boundaries a CLEX step does the same tensor work as a plain-RoPE one (no
//!   per-step copy of a third cache tensor). Like the official code, cached values (and the
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
use clex_core::FrequencyKey;
use clex_core::rope::apply_rotary_seq_major;

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
}

/// Un-rotated keys `[batch, len, kv_heads, head_dim]`, as the list of chunks the forwards
/// appended: pushing a step's key is a handle copy, where concatenating would copy the
/// whole cache at every step. They are read only when t changes ([`RawKeyCache::joined`]),
/// which joins them once into one chunk.
#[derive(Debug, Clone)]
pub struct RawKeyCache<B: Backend> {
    chunks: Vec<Tensor<B, 4>>,
}

impl<B: Backend> Default for RawKeyCache<B> {
    fn default() -> Self {
        RawKeyCache { chunks: Vec::new() }
    }
}

impl<B: Backend> RawKeyCache<B> {
    /// Appends the keys of one forward, `[batch, seq, kv_heads, head_dim]`.
    pub(crate) fn push(&mut self, keys: Tensor<B, 4>) {
        self.chunks.push(keys);
    }

    /// Every key so far as one tensor (joined once, then kept joined); `None` when empty.
    pub(crate) fn joined(&mut self) -> Option<Tensor<B, 4>> {
        if self.chunks.len() > 1 {
            let all = Tensor::cat(std::mem::take(&mut self.chunks), 1);
            self.chunks.push(all);
        }
        self.chunks.first().cloned()
    }

    fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(|t| t.shape().num_elements() * t.dtype().size()).sum()
    }
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

/// One layer's cached tensors, `[batch, len, kv_heads, head_dim]` each (sequence-major, so
/// an append is one contiguous copy per row).
#[derive(Debug, Clone)]
pub struct LayerKv<B: Backend> {
    /// Un-rotated keys (only when re-rotation may be needed).
    raw_k: RawKeyCache<B>,
    /// Keep un-rotated keys (CLEX under the reference policy).
    keep_raw: bool,
    /// Keys rotated with the current frequencies.
    rot_k: Option<Tensor<B, 4>>,
    /// Values.
    v: Option<Tensor<B, 4>>,
}

fn bytes<B: Backend, const D: usize>(t: &Option<Tensor<B, D>>) -> usize {
    t.as_ref().map(|t| t.shape().num_elements() * t.dtype().size()).unwrap_or(0)
}

impl<B: Backend> LayerKv<B> {
    fn new(keep_raw: bool) -> Self {
        LayerKv { raw_k: RawKeyCache::default(), keep_raw, rot_k: None, v: None }
    }

    /// Adds one forward's keys and values and returns every key (rotated) and value so far.
    /// `cos`/`sin` rotate the new keys; under [`Plan::Rerotate`] the plan's tables rotate all.
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
        let cat = |old: Option<Tensor<B, 4>>, new: Tensor<B, 4>| match old {
            Some(old) => Tensor::cat(vec![old, new], 1),
            None => new,
        };
        if self.keep_raw {
            self.raw_k.push(k.clone());
        }
        let k_rot = match plan {
            // t changed: every cached raw key, rotated once with the new θ.
            Plan::Rerotate { cos: cos_all, sin: sin_all } if self.keep_raw => {
                let raw = self.raw_k.joined().expect("just pushed");
                apply_rotary_seq_major(raw, cos_all.clone(), sin_all.clone())
            }
            _ => cat(self.rot_k.take(), apply_rotary_seq_major(k, cos.clone(), sin.clone())),
        };
        let v_all = cat(self.v.take(), v);
        self.rot_k = Some(k_rot.clone());
        self.v = Some(v_all.clone());
        (k_rot, v_all)
    }

    fn memory_bytes(&self) -> usize {
        self.raw_k.memory_bytes() + bytes(&self.rot_k) + bytes(&self.v)
    }
}

/// A growable KV cache for a batch of sequences (left-padded to a common length).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    policy: CachePolicy,
    /// Keep raw keys to re-rotate them (CLEX under the reference policy).
    keep_raw: bool,
    /// Queries are scaled by λ(N), which changes with every token (CLEX log scaling).
    length_scaled_queries: bool,
    layers: Vec<LayerKv<B>>,
    /// Every token fed so far `[batch, len]` (the Recompute policy replays them).
    tokens: Option<Tensor<B, 2, Int>>,
    len: usize,
    /// Identity of the rotary frequencies the cached rotated keys were made with.
    key: Option<FrequencyKey>,
    /// Leading pad tokens per row, fixed by the first forward.
    pads: Vec<usize>,
    stats: CacheStats,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers. `clex`: the model's frequencies
    /// follow a CLEX layer (raw keys are kept for re-rotation under `Reference`);
    /// `length_scaled_queries`: queries are scaled by λ(N) (`Recompute` replays every step).
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
        self.stats
    }

    /// Leading pad tokens per row, once the first forward has fixed them.
    pub fn pads(&self) -> Option<&[usize]> {
        (!self.is_empty()).then_some(self.pads.as_slice())
    }

    /// Bytes held by cached keys and values (raw and rotated) and token ids.
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::memory_bytes).sum::<usize>()
            + self.tokens.as_ref().map(|t| t.shape().num_elements() * t.dtype().size()).unwrap_or(0)
    }

    /// What the next forward does with the cache, given the key of the frequencies in force
    /// for the new total length. `all_positions` makes the cos/sin of every key position
    /// (called only when cached keys are re-rotated).
    pub(crate) fn plan(&self, key: FrequencyKey, all_positions: impl FnOnce() -> (Tensor<B, 3>, Tensor<B, 3>)) -> Plan<B> {
        if self.is_empty() {
            return Plan::Append;
        }
        let changed = self.key != Some(key);
        match self.policy {
            CachePolicy::Recompute if changed || self.length_scaled_queries => Plan::Replay,
            CachePolicy::Reference if changed && self.keep_raw => {
                let (cos, sin) = all_positions();
                Plan::Rerotate { cos, sin }
            }
            _ => Plan::Append,
        }
    }

    /// Starts a [`Plan::Replay`]: empties the cache (keeping its counters) and returns every
    /// token so far followed by `tokens`, with the rows' pads, to run from scratch.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, len + seq]`
    pub(crate) fn replay(&mut self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 2, Int>, Vec<usize>) {
        let all = Tensor::cat(vec![self.tokens.take().expect("a non-empty cache holds its tokens"), tokens], 1);
        let pads = std::mem::take(&mut self.pads);
        let stats = self.stats;
        self.clear();
        self.stats = CacheStats { recomputes: stats.recomputes + 1, recomputed_tokens: stats.recomputed_tokens + all.dims()[1], ..stats };
        (all, pads)
    }

    /// Layer `i`'s tensors.
    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerKv<B> {
        &mut self.layers[i]
    }

    /// Records a forward run under `plan`: its tokens, the frequencies' key and the pads.
    pub(crate) fn commit(&mut self, tokens: Tensor<B, 2, Int>, key: FrequencyKey, pads: Vec<usize>, plan: &Plan<B>) {
        if matches!(plan, Plan::Rerotate { .. }) {
            self.stats.rerotations += 1;
        }
        self.len += tokens.dims()[1];
        self.tokens = Some(match self.tokens.take() {
            Some(old) => Tensor::cat(vec![old, tokens], 1),
            None => tokens,
        });
        self.key = Some(key);
        self.pads = pads;
    }

    /// Forgets everything but the policy and the counters.
    pub fn clear(&mut self) {
        let n = self.layers.len();
        self.layers = (0..n).map(|_| LayerKv::new(self.keep_raw)).collect();
        self.tokens = None;
        self.len = 0;
        self.key = None;
        self.pads.clear();
    }
}
