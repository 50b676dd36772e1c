//! [`Session`]: decoding from a [`CausalLm`] through its KV cache. Every caller (generation,
//! scoring, kv-chunk evaluation, passkey retrieval, benchmarks) runs the model through this,
//! so the decode loop, the token tensors and the read-back of logits exist once.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use clex_core::clex::ScalingFactor;
use clex_core::{ClexBackend, RopeScaling};

use crate::cache::{CachePolicy, KvCache};
use crate::error::ModelError;
use crate::model::{CausalLm, ForwardOptions};
use crate::sampling::{Sampler, SamplingParams};

/// Tokens per forward when a long input goes through the cache ([`Session::prefill`],
/// [`Session::logits`]): memory for activations, logits and (on backends that make them)
/// attention scores is then O(chunk), not O(input). Each chunk is run with the frequencies
/// and λ of the whole input's length, so the result equals one forward over it.
pub const PREFILL_CHUNK: usize = 512;

/// Most new tokens [`Session::generate`] reserves cache room for ahead (beyond, the cache
/// grows by quarters as it fills).
pub const RESERVE_NEW_TOKENS: usize = 8192;

/// A model and the KV cache of one sequence. A clone shares the cache's buffers until one
/// of the two writes (then that one copies them once) and goes on independently.
#[derive(Debug, Clone)]
pub struct Session<'m, B: Backend> {
    model: &'m CausalLm<B>,
    cache: KvCache<B>,
    tokens: Vec<u32>,
    scaling_factor: Option<ScalingFactor>,
    chunk: usize,
}

/// Token ids as a `[1, n]` tensor.
pub fn token_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}

/// `[1, seq, vocab]` logits on the host, row-major.
fn host_rows<B: Backend>(logits: Tensor<B, 3>) -> Result<Vec<f32>, ModelError> {
    logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| ModelError::Invalid(format!("reading logits back: {e:?}")))
}

impl<'m, B: ClexBackend> Session<'m, B> {
    /// An empty session on `model` whose cache follows `policy`.
    pub fn new(model: &'m CausalLm<B>, policy: CachePolicy) -> Self {
        Session { model, cache: model.new_cache(policy), tokens: Vec::new(), scaling_factor: None, chunk: PREFILL_CHUNK }
    }

    /// The same session with inputs run in chunks of `chunk` tokens (at least 1) instead of
    /// [`PREFILL_CHUNK`].
    pub fn with_prefill_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Asks for cache room for `tokens` positions in all when the buffers are next allocated
    /// or grown: called before the first forward, decoding up to there never reallocates
    /// (generation does this itself); called later, the next growth goes straight there.
    pub fn reserve(&mut self, tokens: usize) {
        self.cache.reserve(tokens);
    }

    /// The model.
    pub fn model(&self) -> &'m CausalLm<B> {
        self.model
    }

    /// Every token the session has seen, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The KV cache (its length, stats and memory).
    pub fn cache(&self) -> &KvCache<B> {
        &self.cache
    }

    /// CLEX: the scaling factor of the last forward.
    pub fn scaling_factor(&self) -> Option<ScalingFactor> {
        self.scaling_factor
    }

    /// Whether the last forward ran beyond P·T_max (CLEX; θ(T_max) is then extrapolated).
    pub fn beyond_max(&self) -> bool {
        self.scaling_factor.is_some_and(|sf| sf.beyond_max)
    }

    /// Forgets every token (the cache is emptied, its stats kept at zero).
    pub fn reset(&mut self) {
        self.cache = self.model.new_cache(self.cache.policy());
        self.tokens.clear();
        self.scaling_factor = None;
    }

    /// Appends `ids` and returns the logits of every new row, `[ids.len() * vocab]`: row i
    /// predicts the token after `ids[i]`. Long inputs are better read with
    /// [`Session::logits_by_chunk`], which holds one chunk's logits at a time.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut all = Vec::new();
        self.logits_by_chunk(ids, |_, rows| {
            all.extend_from_slice(rows);
            Ok(())
        })?;
        Ok(all)
    }

    /// Appends `ids` and hands the logits of every new row to `on_rows(first, rows)`, one
    /// chunk at a time: `rows` is `[n * vocab]` for rows `first..first + n` of `ids`.
    pub fn logits_by_chunk(
        &mut self,
        ids: &[u32],
        mut on_rows: impl FnMut(usize, &[f32]) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        self.forward(ids, false, 0, |first, logits| on_rows(first, &host_rows(logits)?))
    }

    /// Appends `ids` and returns the logits of the last row, `[vocab]`: the distribution of
    /// the next token. Only that row goes through the head.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.prefill_part(ids, 0)
    }

    /// [`Session::prefill`] of `ids`, the next part of an input whose whole length (cached
    /// tokens included) will be `total`: run with the frequencies and λ of `total`, so parts
    /// run one after another equal one prefill of the whole. A server runs a long prompt
    /// this way a chunk at a time between other requests' decode steps.
    pub fn prefill_part(&mut self, ids: &[u32], total: usize) -> Result<Vec<f32>, ModelError> {
        let mut last = None;
        self.forward(ids, true, total, |_, logits| {
            last = Some(logits);
            Ok(())
        })?;
        host_rows(last.expect("a forward runs at least one chunk"))
    }

    /// Runs `ids` through the model after the cached tokens, in chunks of `self.chunk`
    /// pinned to the final length (or `total`, when larger); `each(first, logits)` gets each
    /// chunk's `[1, n, vocab]` logits (`[1, 1, vocab]` under `last_only`).
    fn forward(
        &mut self,
        ids: &[u32],
        last_only: bool,
        total: usize,
        mut each: impl FnMut(usize, Tensor<B, 3>) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let vocab = self.model.config().vocab_size;
        if ids.is_empty() {
            return Err(ModelError::Invalid("a forward needs at least one token".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Invalid(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
        }
        let device = self.model.embed.weight.val().device();
        let end = self.cache.len() + ids.len();
        self.cache.reserve(end);
        let opts = ForwardOptions { frequency_len: Some(end.max(total)), last_logits_only: last_only, ..ForwardOptions::default() };
        for (i, piece) in ids.chunks(self.chunk).enumerate() {
            let out = self.model.forward_with(token_tensor(piece, &device), Some(&mut self.cache), &opts)?;
            self.tokens.extend_from_slice(piece);
            self.scaling_factor = out.scaling_factor;
            each(i * self.chunk, out.logits)?;
        }
        Ok(())
    }

    /// One decode step of several sessions on the same model, run as one batch
    /// ([`CausalLm::step_rows`]): appends `ids[i]` to `sessions[i]` and returns each one's
    /// next-token logits, `[vocab]` per session. Each keeps its own cache, position and t.
    /// After an error the sessions' caches may hold the step and their tokens not: reset
    /// them.
    pub fn step_batch(sessions: &mut [&mut Session<'m, B>], ids: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let Some(first) = sessions.first() else {
            return Ok(Vec::new());
        };
        let model = first.model;
        if sessions.iter().any(|s| !std::ptr::eq(s.model, model)) {
            return Err(ModelError::Invalid("a batched step needs sessions of one model".into()));
        }
        let vocab = model.config().vocab_size;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Invalid(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
        }
        let mut caches: Vec<&mut KvCache<B>> = sessions.iter_mut().map(|s| &mut s.cache).collect();
        let (logits, factors) = model.step_rows(ids, &mut caches)?;
        let host =
            logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| ModelError::Invalid(format!("reading logits back: {e:?}")))?;
        for ((s, &id), factor) in sessions.iter_mut().zip(ids).zip(factors) {
            s.tokens.push(id);
            s.scaling_factor = factor;
        }
        Ok(host.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Keeps the first `len` tokens (a shared prefix with the next input, as a chat turn
    /// re-renders its history): only what follows them is run again.
    pub fn truncate(&mut self, len: usize) {
        if len == 0 {
            self.reset();
        } else if len < self.tokens.len() {
            self.cache.truncate(len);
            self.tokens.truncate(len);
        }
    }

    /// Appends one token and returns the next token's logits, `[vocab]`.
    pub fn step(&mut self, id: u32) -> Result<Vec<f32>, ModelError> {
        self.prefill(&[id])
    }

    /// The longest sequence generation runs to by default: P·T_max for CLEX (beyond it θ is
    /// extrapolated), else no limit.
    pub fn default_max_seq_len(&self) -> Option<usize> {
        let rope = &self.model.config().rope;
        match &rope.scaling {
            RopeScaling::Clex(p) => Some(p.max_factor * rope.max_position_embeddings),
            _ => None,
        }
    }

    /// Prefills `prompt` and returns the continuation as an iterator of tokens: each `next`
    /// samples one token (running the forward of the previous one first), until
    /// `max_new_tokens`, `max_seq_len` or a stop token. [`Generation::stop`] says which.
    pub fn generate<'s>(&'s mut self, prompt: &[u32], options: GenerateOptions) -> Result<Generation<'s, 'm, B>, ModelError> {
        let max_seq_len = options.max_seq_len.or_else(|| self.default_max_seq_len());
        if let Some(m) = max_seq_len
            && self.tokens.len() + prompt.len() >= m
        {
            return Err(ModelError::TooLong { tokens: self.tokens.len() + prompt.len(), limit: m });
        }
        // Room for the whole generation up front (capped: beyond it the cache grows by
        // quarters, so a huge `max_new_tokens` allocates nothing it does not use).
        let end = self.tokens.len() + prompt.len() + options.max_new_tokens.min(RESERVE_NEW_TOKENS);
        self.cache.reserve(max_seq_len.map_or(end, |m| end.min(m)));
        let logits = self.prefill(prompt)?;
        Ok(Generation {
            session: self,
            sampler: Sampler::new(options.sampling),
            pending: Some(logits),
            last: None,
            remaining: options.max_new_tokens,
            max_seq_len,
            stop_tokens: options.stop_tokens,
            stop: None,
        })
    }
}

/// What [`Session::generate`] runs under.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Most tokens in the whole sequence (prompt included); `None`: the model's default
    /// ([`Session::default_max_seq_len`]).
    pub max_seq_len: Option<usize>,
    /// Tokens that end generation (not yielded), usually the model's EOS ids.
    pub stop_tokens: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled.
    StopToken(u32),
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The sequence reached `max_seq_len`.
    MaxSeqLen,
}

/// The tokens of one generation; see [`Session::generate`].
#[derive(Debug)]
pub struct Generation<'s, 'm, B: Backend> {
    session: &'s mut Session<'m, B>,
    sampler: Sampler,
    /// Logits for the next draw, when already computed (after the prompt).
    pending: Option<Vec<f32>>,
    /// The last token drawn, not yet run through the model.
    last: Option<u32>,
    remaining: usize,
    max_seq_len: Option<usize>,
    stop_tokens: Vec<u32>,
    stop: Option<StopReason>,
}

impl<B: ClexBackend> Generation<'_, '_, B> {
    /// Why generation ended (`None` while it runs).
    pub fn stop(&self) -> Option<StopReason> {
        self.stop
    }

    /// The session. Its tokens include every generated token but the last one drawn, which
    /// runs through the model on the next draw or in [`Generation::finish`].
    pub fn session(&self) -> &Session<'_, B> {
        self.session
    }

    /// Runs the last drawn token through the model, so that the session holds the whole
    /// sequence and can go on (another turn); returns why generation stopped.
    pub fn finish(mut self) -> Result<Option<StopReason>, ModelError> {
        if let Some(t) = self.last.take() {
            self.session.step(t)?;
        }
        Ok(self.stop)
    }

    fn draw(&mut self) -> Result<Option<u32>, ModelError> {
        if self.stop.is_some() {
            return Ok(None);
        }
        // The history the sampler penalises includes the last drawn token.
        let len = self.session.tokens.len() + self.last.is_some() as usize;
        let stop = if self.remaining == 0 {
            Some(StopReason::MaxNewTokens)
        } else if self.max_seq_len.is_some_and(|m| len >= m) {
            Some(StopReason::MaxSeqLen)
        } else {
            None
        };
        if stop.is_some() {
            self.stop = stop;
            return Ok(None);
        }
        let logits = match (self.pending.take(), self.last.take()) {
            (Some(l), _) => l,
            (None, Some(t)) => self.session.step(t)?,
            (None, None) => unreachable!("a generation holds logits or a token to run"),
        };
        let next = self.sampler.sample(&logits, &self.session.tokens);
        if self.stop_tokens.contains(&next) {
            self.stop = Some(StopReason::StopToken(next));
            return Ok(None);
        }
        self.remaining -= 1;
        self.last = Some(next);
        Ok(Some(next))
    }
}

impl<B: ClexBackend> Iterator for Generation<'_, '_, B> {
    type Item = Result<u32, ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.draw() {
            Ok(t) => t.map(Ok),
            Err(e) => {
                self.stop = Some(StopReason::MaxNewTokens);
                Some(Err(e))
            }
        }
    }
}
