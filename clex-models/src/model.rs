//! [`CausalLm`]: one decoder-only model type for both architectures (the architecture
//! files only name and shape its tensors), with the forward passes the CLI, evaluation and
//! training share.

use burn::module::{Content, DisplaySettings, Module, ModuleDisplay};
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData, backend::Backend};
use clex_core::attention::KeyMask;
use clex_core::clex::{ScalingFactor, log_scale};
use clex_core::rope::cos_sin;
use clex_core::{ClexBackend, ClexLayer, RopeConfig, frequencies};

use crate::attention::RotaryBatch;
use crate::cache::{CachePolicy, KvCache, LayerCache, Plan, RowCache};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::layers::{Block, Norm};

/// A LLaMA or GPT-NeoX causal language model, optionally with CLEX.
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct CausalLm<B: Backend> {
    /// Token embedding (`embed_tokens` / `embed_in`).
    pub embed: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<Block<B>>,
    /// Final norm (`norm` / `final_layer_norm`).
    pub final_norm: Norm<B>,
    /// LM head (`lm_head` / `embed_out`); `None` when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// The model's one CLEX layer (`clex_layer`), for CLEX checkpoints.
    pub clex_layer: Option<ClexLayer<B>>,
    #[module(skip)]
    config: ModelConfig,
}

/// Options of [`CausalLm::forward_with`].
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Also return every hidden state (HF `output_hidden_states`).
    pub hidden_states: bool,
    /// Leading pad tokens of each row (left-padded batch). Only read on the first forward
    /// of a cache; pads get no attention and positions start after them.
    pub left_padding: Option<Vec<usize>>,
    /// The sequence length the rotary frequencies (CLEX's t, dynamic scaling) and λ(N) are
    /// taken for, when larger than cached + new tokens: a long input run through the cache
    /// in chunks, each pinned to the whole input's length, equals one forward over it.
    pub frequency_len: Option<usize>,
    /// Compute the logits of each row's last token only (`[batch, 1, vocab]`): a prefill
    /// needs no more, and the head is a large share of a prefill's work.
    pub last_logits_only: bool,
}

/// What a forward returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput<B: Backend> {
    /// `[batch, seq, vocab]` for the tokens of this call.
    pub logits: Tensor<B, 3>,
    /// Embeddings, the output of each layer but the last, then the final-norm output
    /// (HF's convention); empty unless asked for.
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// CLEX: the scaling factor used.
    pub scaling_factor: Option<ScalingFactor>,
}

/// What a module summary (burn-train's learner summary) shows: the model's shape, not every
/// tensor and not the raw `config.json`.
impl<B: Backend> ModuleDisplay for CausalLm<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new().with_new_line_after_attribute(true).optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let c = &self.config;
        content
            .add("architecture", &c.arch.model_type().to_string())
            .add("layers", &c.num_layers)
            .add("hidden", &c.hidden_size)
            .add("intermediate", &c.intermediate_size)
            .add("heads", &c.num_heads)
            .add("kv_heads", &c.num_kv_heads)
            .add("head_dim", &c.head_dim)
            .add("vocab", &c.vocab_size)
            .add("rope", &c.rope.scaling.kind().to_string())
            .add("max_position_embeddings", &c.rope.max_position_embeddings)
            .optional()
    }
}

impl<B: Backend> CausalLm<B> {
    pub(crate) fn from_parts(
        config: ModelConfig,
        embed: Embedding<B>,
        layers: Vec<Block<B>>,
        final_norm: Norm<B>,
        lm_head: Option<Linear<B>>,
        clex_layer: Option<ClexLayer<B>>,
    ) -> Self {
        CausalLm { embed, layers, final_norm, lm_head, clex_layer, config }
    }

    /// The model settings.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The rotary settings.
    pub fn rope(&self) -> &RopeConfig {
        &self.config.rope
    }

    fn device(&self) -> B::Device {
        self.embed.weight.val().device()
    }

    fn dtype(&self) -> DType {
        self.embed.weight.val().dtype()
    }

    /// cos/sin `[rows, seq, rot]` for per-row positions (f32, may be fractional), in the
    /// model dtype (angles are formed in f32 first, docs/CLEX.md §2.2).
    pub fn rotary_tables(
        &self,
        positions: Vec<f32>,
        rows: usize,
        inv_freq: Tensor<B, 1>,
        attention_scaling: f32,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let n = positions.len();
        let seq = n / rows;
        let pos = Tensor::<B, 1>::from_data(TensorData::new(positions, [n]), (&self.device(), DType::F32));
        let (cos, sin) = cos_sin(pos, inv_freq.cast(FloatDType::F32), attention_scaling);
        let rot = cos.dims()[1];
        let (cos, sin) = (cos.reshape([rows, seq, rot]), sin.reshape([rows, seq, rot]));
        match self.dtype() {
            DType::F32 => (cos, sin),
            d => (cos.cast(d), sin.cast(d)),
        }
    }

    /// λ(N) rounded like the reference (logs and quotient in the model dtype).
    fn query_scale(&self, n: usize) -> Option<f32> {
        if !self.config.log_scale {
            return None;
        }
        let p = self.config.rope.max_position_embeddings;
        Some(match self.dtype() {
            DType::BF16 => log_scale(n, p, |x| half::bf16::from_f32(x).to_f32()),
            DType::F16 => log_scale(n, p, |x| half::f16::from_f32(x).to_f32()),
            _ => log_scale(n, p, |x| x),
        })
    }

    /// Which keys the new tokens see: causal over the cache, the rows' left padding, and
    /// the model's sliding window.
    fn key_mask(&self, pads: &[usize]) -> KeyMask {
        KeyMask::causal_padded(pads).with_window(self.config.sliding_window)
    }

    /// Positions of absolute indices `from..to` for each row, skipping its pads.
    fn positions(from: usize, to: usize, pads: &[usize]) -> Vec<f32> {
        pads.iter().flat_map(|&p| (from..to).map(move |j| j.saturating_sub(p) as f32)).collect()
    }
}

/// The forwards: every attention runs on a [`ClexBackend`], which says what its matmuls can do.
impl<B: ClexBackend> CausalLm<B> {
    /// Bytes a forward of `seq` new tokens over `total` positions needs beyond the weights,
    /// at its peak, when long inputs go through the cache in chunks of
    /// [`crate::session::PREFILL_CHUNK`] tokens (as [`crate::Session`] runs them): the KV
    /// cache (raw keys too for CLEX), and per chunk a few activations per token, the logits,
    /// and, on backends whose attention materialises scores (all but burn-flex's kernel),
    /// one layer's `[heads, chunk, total]` scores and probabilities in f32. Sizes that
    /// overflow saturate at `usize::MAX`.
    pub fn memory_estimate(&self, batch: usize, seq: usize, total: usize) -> usize {
        let c = &self.config;
        let f = 4usize; // bytes per f32 element (an upper bound for f16/bf16 models too)
        let chunk = seq.min(crate::session::PREFILL_CHUNK);
        let kv_tensors = if self.clex_layer.is_some() { 3 } else { 2 };
        let mul = |xs: &[usize]| xs.iter().try_fold(1usize, |a, &x| a.checked_mul(x)).unwrap_or(usize::MAX);
        let kv = mul(&[kv_tensors, c.num_layers, c.num_kv_heads, c.head_dim, total, batch, f]);
        let scores = if B::ATTENTION_SCORES { mul(&[2, c.num_heads, chunk, total, batch, f]) } else { 0 };
        let activations = mul(&[8, chunk, batch, c.hidden_size.max(c.intermediate_size), f]);
        let logits = mul(&[2, chunk, batch, c.vocab_size, f]);
        [kv, scores, activations, logits].iter().fold(0usize, |a, &x| a.saturating_add(x))
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self, policy: CachePolicy) -> KvCache<B> {
        KvCache::new(policy, self.layers.len(), self.clex_layer.is_some(), self.config.log_scale)
    }

    /// A forward without cache: `[batch, seq]` token ids → `[batch, seq, vocab]` logits.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, ModelError> {
        Ok(self.forward_with(tokens, None, &ForwardOptions::default())?.logits)
    }

    /// The inference forward, with or without a KV cache.
    ///
    /// With a cache, `tokens` are appended after the cached ones; t (CLEX) or the dynamic
    /// frequencies follow the total length, and the cache policy decides what happens to
    /// cached keys when they change (see [`crate::cache`]).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`
    /// - returns logits `[batch, seq, vocab]` (`[batch, 1, vocab]` under `last_logits_only`)
    pub fn forward_with(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput<B>, ModelError> {
        let [b, s] = tokens.dims();
        if s == 0 {
            return Err(ModelError::Invalid("forward needs at least one token".into()));
        }
        let pads = match (cache.as_deref().and_then(KvCache::pads), &opts.left_padding) {
            (Some(p), _) if p.len() != b => {
                return Err(ModelError::Invalid(format!("the cache holds {} rows, this forward has {b}", p.len())));
            }
            (Some(p), _) => p.to_vec(),
            (None, Some(p)) => p.clone(),
            (None, None) => vec![0; b],
        };
        if pads.len() != b {
            return Err(ModelError::Invalid(format!("left_padding has {} rows, the batch has {b}", pads.len())));
        }
        let past = cache.as_deref().map_or(0, KvCache::len);
        let total = past + s;
        let freq_len = opts.frequency_len.unwrap_or(total).max(total);
        let freqs = frequencies(self.rope(), self.clex_layer.as_ref(), freq_len, &self.device());
        let uniform = pads.iter().all(|&p| p == 0);
        let (rows, row_pads) = if uniform { (1, vec![0]) } else { (b, pads.clone()) };
        let tables =
            |from| self.rotary_tables(Self::positions(from, total, &row_pads), rows, freqs.inv_freq.clone(), freqs.attention_scaling);
        let plan = cache.as_deref().map(|c| c.plan(freqs.key, freq_len, || tables(0)));
        if let (Some(c), Some(Plan::Replay)) = (cache.as_deref_mut(), &plan) {
            // Frequencies changed (or, with log scaling, λ(N) did): replay everything so far
            // so that every layer sees what a full forward would: the old tokens in chunks
            // pinned to this forward's length (only the cache is kept), then the new ones.
            let (all, pads) = c.replay(tokens);
            let mut at = 0;
            while at < past {
                let n = crate::session::PREFILL_CHUNK.min(past - at);
                let head = ForwardOptions {
                    left_padding: Some(pads.clone()),
                    frequency_len: Some(freq_len),
                    last_logits_only: true,
                    hidden_states: false,
                };
                self.forward_with(all.clone().narrow(1, at, n), Some(c), &head)?;
                at += n;
            }
            let last = ForwardOptions { left_padding: Some(pads), frequency_len: Some(freq_len), ..opts.clone() };
            return self.forward_with(all.narrow(1, past, s), Some(c), &last);
        }
        let (cos, sin) = tables(past);
        let rot = RotaryBatch { cos, sin, query_scale: self.query_scale(freq_len) };
        let mask = self.key_mask(&pads);
        let kv = match (cache.as_deref_mut(), plan.as_ref()) {
            (Some(c), Some(p)) => Caches::Shared(c, p),
            _ => Caches::None,
        };
        let (logits, hidden_states) = self.run(tokens.clone(), &rot, kv, &mask, opts, None);
        if let (Some(c), Some(plan)) = (cache, &plan) {
            c.commit(tokens, freqs.key, freq_len, pads, plan);
        }
        Ok(ForwardOutput { logits, hidden_states, scaling_factor: freqs.scaling_factor })
    }

    /// One decode step of several independent sequences, each with its own cache (one row
    /// each, unpadded) at its own position and t: `tokens[i]` is appended to `caches[i]`.
    /// Embedding, projections, MLPs and head run as one `[rows, 1]` batch, so the weights are
    /// read once for all rows; rotation, cache writes and attention run per row with that
    /// row's frequencies, λ(N) and cache plan. A row whose cache must replay (Recompute at a
    /// frequency change) runs alone through [`CausalLm::forward_with`] first.
    ///
    /// # Shapes
    /// - returns logits `[rows, vocab]` and each row's scaling factor
    pub fn step_rows(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache<B>],
    ) -> Result<(Tensor<B, 2>, Vec<Option<ScalingFactor>>), ModelError> {
        let rows = tokens.len();
        if rows == 0 || rows != caches.len() {
            return Err(ModelError::Invalid(format!("a batched step needs one cache per token: {rows} tokens, {} caches", caches.len())));
        }
        if let Some(i) = caches.iter().position(|c| c.pads().is_some_and(|p| p.len() != 1 || p[0] != 0)) {
            return Err(ModelError::Invalid(format!("a batched step takes unpadded one-row caches; row {i} is not")));
        }
        let device = self.device();
        let ids = |ts: &[u32]| {
            let n = ts.len();
            Tensor::<B, 2, Int>::from_data(TensorData::new(ts.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n, 1]), &device)
        };
        let (mut plans, mut cos, mut sin, mut scales, mut keys, mut factors) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut alone = Vec::new();
        for (i, cache) in caches.iter().enumerate() {
            let past = cache.len();
            let total = past + 1;
            let freqs = frequencies(self.rope(), self.clex_layer.as_ref(), total, &device);
            let tables = |from| self.rotary_tables(Self::positions(from, total, &[0]), 1, freqs.inv_freq.clone(), freqs.attention_scaling);
            let plan = cache.plan(freqs.key, total, || tables(0));
            if matches!(plan, Plan::Replay) {
                alone.push(i);
                continue;
            }
            let (c, s) = tables(past);
            cos.push(c);
            sin.push(s);
            plans.push(plan);
            scales.push(self.query_scale(total));
            keys.push(freqs.key);
            factors.push(freqs.scaling_factor);
        }
        // Rows that replay their whole sequence, one by one.
        let mut alone_logits = Vec::new();
        let mut alone_factors = Vec::new();
        for &i in &alone {
            let opts = ForwardOptions { last_logits_only: true, ..ForwardOptions::default() };
            let out = self.forward_with(ids(&tokens[i..=i]), Some(&mut *caches[i]), &opts)?;
            alone_logits.push(out.logits.reshape([1, self.config.vocab_size]));
            alone_factors.push(out.scaling_factor);
        }
        let batched: Vec<usize> = (0..rows).filter(|i| !alone.contains(i)).collect();
        let mut batched_logits = None;
        if !batched.is_empty() {
            let batch_tokens: Vec<u32> = batched.iter().map(|&i| tokens[i]).collect();
            let rot = RotaryBatch { cos: Tensor::cat(cos, 0), sin: Tensor::cat(sin, 0), query_scale: None };
            let mut row_caches: Vec<Option<&mut KvCache<B>>> = caches.iter_mut().map(|c| Some(&mut **c)).collect();
            let per_row = batched
                .iter()
                .zip(&plans)
                .zip(&scales)
                .map(|((&i, plan), &scale)| (row_caches[i].take().expect("each row once"), plan, scale))
                .collect();
            let mask = self.key_mask(&[0]);
            let (logits, _) = self.run(ids(&batch_tokens), &rot, Caches::PerRow(per_row), &mask, &ForwardOptions::default(), None);
            for (((&i, plan), key), &t) in batched.iter().zip(&plans).zip(keys).zip(&batch_tokens) {
                caches[i].commit(ids(&[t]), key, caches[i].len() + 1, vec![0], plan);
            }
            batched_logits = Some(logits.reshape([batched.len(), self.config.vocab_size]));
        }
        // Back into the callers' row order.
        let (mut b_rows, mut a_rows) = (0, 0);
        let mut order = Vec::with_capacity(rows);
        let mut scaling = Vec::with_capacity(rows);
        for i in 0..rows {
            if alone.contains(&i) {
                order.push(alone_logits[a_rows].clone());
                scaling.push(alone_factors[a_rows]);
                a_rows += 1;
            } else {
                let l = batched_logits.as_ref().expect("batched rows ran");
                order.push(l.clone().narrow(0, b_rows, 1));
                scaling.push(factors[b_rows]);
                b_rows += 1;
            }
        }
        let logits = if alone.is_empty() { batched_logits.expect("every row batched") } else { Tensor::cat(order, 0) };
        Ok((logits, scaling))
    }

    /// A forward with caller-made rotary tables and no cache (training: fractional CLEX
    /// positions and a differentiable θ(t)).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`; `cos`, `sin`: `[batch or 1, seq, rot]`
    /// - returns logits `[batch, seq, vocab]`
    pub fn forward_rotary(&self, tokens: Tensor<B, 2, Int>, cos: Tensor<B, 3>, sin: Tensor<B, 3>) -> Tensor<B, 3> {
        let rot = RotaryBatch { cos, sin, query_scale: None };
        self.run(tokens, &rot, Caches::None, &self.key_mask(&[]), &ForwardOptions::default(), None).0
    }

    /// [`CausalLm::forward_rotary`], also returning each mixture-of-experts layer's router
    /// logits `[batch·seq, experts]` (empty for dense models): the router's load-balancing
    /// loss in training, and its golden at integer positions.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`; `cos`, `sin`: `[batch or 1, seq, rot]`
    /// - returns logits `[batch, seq, vocab]` and per MoE layer `[batch·seq, experts]`
    pub fn forward_rotary_routed(
        &self,
        tokens: Tensor<B, 2, Int>,
        cos: Tensor<B, 3>,
        sin: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 2>>) {
        let rot = RotaryBatch { cos, sin, query_scale: None };
        let mut router = Vec::new();
        let (logits, _) = self.run(tokens, &rot, Caches::None, &self.key_mask(&[]), &ForwardOptions::default(), Some(&mut router));
        (logits, router)
    }

    fn run(
        &self,
        tokens: Tensor<B, 2, Int>,
        rot: &RotaryBatch<B>,
        mut cache: Caches<'_, '_, B>,
        mask: &KeyMask,
        opts: &ForwardOptions,
        mut router: Option<&mut Vec<Tensor<B, 2>>>,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>) {
        let mut x = self.embed.forward(tokens);
        let mut hidden = Vec::new();
        let act = self.config.activation;
        for (i, layer) in self.layers.iter().enumerate() {
            if opts.hidden_states {
                hidden.push(x.clone());
            }
            let kv = match &mut cache {
                Caches::None => LayerCache::None,
                Caches::Shared(c, plan) => LayerCache::Shared(c.layer_mut(i), plan),
                Caches::PerRow(rows) => LayerCache::PerRow(
                    rows.iter_mut()
                        .map(|(c, plan, query_scale)| RowCache { kv: c.layer_mut(i), plan, query_scale: *query_scale })
                        .collect(),
                ),
            };
            x = layer.forward_routed(x, act, rot, kv, mask, router.as_deref_mut());
        }
        let x = self.final_norm.forward(x);
        if opts.hidden_states {
            hidden.push(x.clone());
        }
        let s = x.dims()[1];
        let x = if opts.last_logits_only && s > 1 { x.narrow(1, s - 1, 1) } else { x };
        let logits = match &self.lm_head {
            Some(head) => head.forward(x),
            None => tied_head(x, self.embed.weight.val()),
        };
        (logits, hidden)
    }
}

/// The caches of a [`CausalLm::run`].
enum Caches<'c, 'p, B: Backend> {
    None,
    /// One cache for the batch, with the forward's plan.
    Shared(&'c mut KvCache<B>, &'p Plan<B>),
    /// One cache per row, each with its plan and query scale.
    PerRow(Vec<(&'c mut KvCache<B>, &'p Plan<B>, Option<f32>)>),
}

/// Logits of a tied head: x · Eᵀ for the embedding E `[vocab, hidden]`.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
fn tied_head<B: Backend>(x: Tensor<B, 3>, embed: Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, s, h] = x.dims();
    let vocab = embed.dims()[0];
    if b * s <= 16 {
        // Decoding: (E · xᵀ)ᵀ reads E as stored, where x · Eᵀ would copy the whole transposed
        // embedding at every step on backends that multiply contiguous operands only.
        embed.matmul(x.reshape([b * s, h]).transpose()).transpose().reshape([b, s, vocab])
    } else {
        x.matmul(embed.transpose().unsqueeze::<3>())
    }
}
