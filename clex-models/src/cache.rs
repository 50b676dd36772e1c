//! The KV cache CLEX needs.
//!
//! CLEX's θ depends on t = ceil(N/P), so keys must be kept un-rotated and re-rotated when t
//! changes (docs/CLEX.md §6.2). Two policies:
//! - [`CachePolicy::Reference`] (default; what the released checkpoints were evaluated with):
//!   per layer, raw keys and values are cached; a rotated copy of the keys, valid for the
//!   current t, is kept too and rebuilt once when t changes, so a decode step rotates only
//!   its own key except at the ceil(N/P) boundaries. The raw keys are kept as the chunks
//!   the forwards appended ([`RawKeyCache`]) and joined only at a boundary, so between
//!   boundaries a CLEX step does the same tensor work as a plain-RoPE one (no per-step copy
//!   of a third cache tensor). Like the official code, cached values
//!   (and the keys of layers >= 1) keep coming from hidden states computed under the old θ,
//!   so after a t change decoding is not a full recompute.
//! - [`CachePolicy::Recompute`]: when the rotary frequencies change, the prefill is re-run
//!   over every token so far under the new θ; decoding then equals a full forward at every
//!   step, at the cost of one prefill per boundary ([`CacheStats::recomputes`]). With CLEX
//!   log scaling (`log_scale: true`) λ(N) changes with every token, so this policy replays
//!   the whole sequence at every step: exact, and quadratic.
//!
//! Non-CLEX kinds whose frequencies depend on length (dynamic NTK, LongRoPE) follow
//! transformers under `Reference`: cached keys keep the rotation they were made with.

use burn::tensor::{Int, Tensor, backend::Backend};

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

/// One layer's cached tensors, `[batch, len, kv_heads, head_dim]` each (sequence-major, so
/// an append is one contiguous copy per row).
#[derive(Debug, Clone, Default)]
pub struct LayerKv<B: Backend> {
    /// Un-rotated keys (only when re-rotation may be needed).
    pub(crate) raw_k: RawKeyCache<B>,
    /// Keys rotated with the current frequencies.
    pub(crate) rot_k: Option<Tensor<B, 4>>,
    /// Values.
    pub(crate) v: Option<Tensor<B, 4>>,
}

fn bytes<B: Backend, const D: usize>(t: &Option<Tensor<B, D>>) -> usize {
    t.as_ref().map(|t| t.shape().num_elements() * t.dtype().size()).unwrap_or(0)
}

impl<B: Backend> LayerKv<B> {
    fn memory_bytes(&self) -> usize {
        self.raw_k.memory_bytes() + bytes(&self.rot_k) + bytes(&self.v)
    }
}

/// A growable KV cache for a batch of sequences (left-padded to a common length).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) policy: CachePolicy,
    pub(crate) layers: Vec<LayerKv<B>>,
    /// Every token fed so far `[batch, len]` (the Recompute policy replays them).
    pub(crate) tokens: Option<Tensor<B, 2, Int>>,
    pub(crate) len: usize,
    /// Identity of the rotary frequencies the cached rotated keys were made with.
    pub(crate) epoch: Option<u64>,
    /// Leading pad tokens per row, fixed by the first forward.
    pub(crate) pads: Vec<usize>,
    pub(crate) stats: CacheStats,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(policy: CachePolicy, num_layers: usize) -> Self {
        KvCache {
            policy,
            layers: vec![LayerKv::default(); num_layers],
            tokens: None,
            len: 0,
            epoch: None,
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

    /// Bytes held by cached keys and values (raw and rotated) and token ids.
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::memory_bytes).sum::<usize>()
            + self.tokens.as_ref().map(|t| t.shape().num_elements() * t.dtype().size()).unwrap_or(0)
    }

    /// Forgets everything but the policy and the counters.
    pub fn clear(&mut self) {
        let n = self.layers.len();
        self.layers = vec![LayerKv::default(); n];
        self.tokens = None;
        self.len = 0;
        self.epoch = None;
        self.pads.clear();
    }
}
