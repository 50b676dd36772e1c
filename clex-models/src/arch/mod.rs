//! The architectures, one file each ([`llama`], [`gpt_neox`], [`phi`], [`mixtral`]: HF
//! config mirror, HF tensor names, the blocks that differ), and what they share: [`WeightSource`] (where weights come
//! from: a checkpoint, or seeded random init), the prefix views that nest HF names
//! ([`WeightsAt`] to build, [`HostTensorsAt`] to save), and the model skeleton (layers, embedding,
//! final norm, head, CLEX layer) that one [`build`] and one [`hf_tensors`] walk for all.

pub(crate) mod gpt_neox;
pub(crate) mod llama;
pub(crate) mod mixtral;
pub(crate) mod phi;

use std::fmt::Display;
use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use clex_core::{ClexLayer, ClexLayerConfig, RopeConfig};
use serde::Deserialize;
use serde_json::Value;

use crate::attention::Attention;
use crate::config::{Activation, Architecture, ModelConfig, MoeConfig, TokenIds};
use crate::error::ModelError;
use crate::layers::{Block, Mlp, Norm, PlainMlp};
use crate::model::CausalLm;
use crate::weights::{HostTensor, Weights, in_out_weight};

/// Where a model's weights come from: a checkpoint ([`CheckpointWeights`]) or seeded random
/// init ([`crate::init_model`]). Each module is asked for once, by its full HF name (e.g.
/// `model.layers.0.self_attn.q_proj`), in the order [`build`] walks the model.
pub(crate) trait WeightSource<B: Backend> {
    /// An HF `nn.Linear` (`{name}.weight` `[out, in]`, `{name}.bias` `[out]` when `bias`) as
    /// a burn `Linear` (`[in, out]`).
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, ModelError>;

    /// A fused q/k/v projection whose rows are `[head][q|k|v][head_dim]` (GPT-NeoX's
    /// `query_key_value`), as the q, k and v linears (`[d_in, heads·head_dim]` each).
    fn per_head_qkv(&mut self, name: &str, d_in: usize, heads: usize, head_dim: usize, bias: bool) -> Result<[Linear<B>; 3], ModelError>;

    /// A token embedding, `{name}.weight` `[vocab, hidden]`.
    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding<B>, ModelError>;

    /// An RMSNorm, `{name}.weight` `[hidden]`.
    fn rms_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<RmsNorm<B>, ModelError>;

    /// A LayerNorm, `{name}.weight` and `{name}.bias` `[hidden]`.
    fn layer_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<LayerNorm<B>, ModelError>;

    /// The CLEX layer `config` describes, under `{name}.*` ([`CLEX_TENSORS`]), in f32.
    fn clex_layer(&mut self, name: &str, config: &ClexLayerConfig) -> Result<ClexLayer<B>, ModelError>;

    /// A head tied to the embedding, which some checkpoints store anyway: when present,
    /// `{name}.weight` must have the embedding's shape `[vocab, hidden]`. The model does not
    /// read it.
    fn tied_copy(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<(), ModelError>;
}

/// The CLEX layer's tensors under `{prefix}.clex_layer`: inv_freq `[k]`, U `[k, h]`, D `[h, k]`.
pub(crate) const CLEX_TENSORS: [&str; 3] = ["inv_freq", "proj_func.ode_up_proj", "proj_func.ode_down_proj"];

/// `prefix.name`, or `name` at the root.
fn join(prefix: &str, name: impl Display) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// A [`WeightSource`] seen under a name prefix, as candle's `VarBuilder::pp`: the
/// architecture files write each HF name segment once, nested.
pub(crate) struct WeightsAt<'a, B: Backend> {
    source: &'a mut dyn WeightSource<B>,
    prefix: String,
}

impl<'a, B: Backend> WeightsAt<'a, B> {
    /// The root view: names as given.
    pub(crate) fn new(source: &'a mut dyn WeightSource<B>) -> Self {
        WeightsAt { source, prefix: String::new() }
    }

    /// The view under `name`: `pp("self_attn")` of `model.layers.0` is `model.layers.0.self_attn`.
    pub(crate) fn pp(&mut self, name: impl Display) -> WeightsAt<'_, B> {
        WeightsAt { source: &mut *self.source, prefix: join(&self.prefix, name) }
    }

    /// [`WeightSource::linear`] `name` under this prefix; the others likewise.
    pub(crate) fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, ModelError> {
        self.source.linear(&join(&self.prefix, name), d_in, d_out, bias)
    }

    pub(crate) fn per_head_qkv(
        &mut self,
        name: &str,
        d_in: usize,
        heads: usize,
        head_dim: usize,
        bias: bool,
    ) -> Result<[Linear<B>; 3], ModelError> {
        self.source.per_head_qkv(&join(&self.prefix, name), d_in, heads, head_dim, bias)
    }

    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding<B>, ModelError> {
        self.source.embedding(&join(&self.prefix, name), vocab, hidden)
    }

    pub(crate) fn rms_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<RmsNorm<B>, ModelError> {
        self.source.rms_norm(&join(&self.prefix, name), hidden, eps)
    }

    pub(crate) fn layer_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<LayerNorm<B>, ModelError> {
        self.source.layer_norm(&join(&self.prefix, name), hidden, eps)
    }

    fn clex_layer(&mut self, name: &str, config: &ClexLayerConfig) -> Result<ClexLayer<B>, ModelError> {
        self.source.clex_layer(&join(&self.prefix, name), config)
    }

    fn tied_copy(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<(), ModelError> {
        self.source.tied_copy(&join(&self.prefix, name), vocab, hidden)
    }
}

/// A tensor's values on the host, as f32.
pub(crate) fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("converted to f32")
}

/// Host tensors in HF names and layouts, written under a name prefix the way [`WeightsAt`]
/// reads them.
pub(crate) struct HostTensorsAt<'a> {
    tensors: &'a mut Vec<HostTensor>,
    prefix: String,
}

impl<'a> HostTensorsAt<'a> {
    fn new(tensors: &'a mut Vec<HostTensor>) -> Self {
        HostTensorsAt { tensors, prefix: String::new() }
    }

    /// The view under `name`, as [`WeightsAt::pp`].
    pub(crate) fn pp(&mut self, name: impl Display) -> HostTensorsAt<'_> {
        HostTensorsAt { tensors: &mut *self.tensors, prefix: join(&self.prefix, name) }
    }

    /// A tensor `name` in the model's dtype.
    pub(crate) fn tensor(&mut self, name: &str, shape: Vec<usize>, values: Vec<f32>) {
        self.tensors.push(HostTensor { name: join(&self.prefix, name), shape, values, force_f32: false });
    }

    /// HF `[out, in]` weight and `[out]` bias of a burn `Linear` (`[in, out]`).
    pub(crate) fn linear<B: Backend>(&mut self, name: &str, l: &Linear<B>) {
        let mut out = self.pp(name);
        let w = l.weight.val();
        let [d_in, d_out] = w.dims();
        out.tensor("weight", vec![d_out, d_in], host_values(w.transpose()));
        if let Some(b) = &l.bias {
            out.tensor("bias", vec![d_out], host_values(b.val()));
        }
    }

    fn embedding<B: Backend>(&mut self, name: &str, e: &Embedding<B>) {
        let w = e.weight.val();
        self.pp(name).tensor("weight", w.dims().to_vec(), host_values(w));
    }

    fn norm<B: Backend>(&mut self, name: &str, n: &Norm<B>) {
        let mut out = self.pp(name);
        let (gamma, beta) = match n {
            Norm::Rms(n) => (n.gamma.val(), None),
            Norm::Layer(n) => (n.gamma.val(), n.beta.as_ref().map(Param::val)),
        };
        out.tensor("weight", gamma.dims().to_vec(), host_values(gamma));
        if let Some(b) = beta {
            out.tensor("bias", b.dims().to_vec(), host_values(b));
        }
    }

    /// The CLEX parameters, kept in f32 whatever the model dtype.
    fn clex_layer<B: Backend>(&mut self, name: &str, clex: &ClexLayer<B>) {
        let w = clex.weights();
        let (k, h) = (w.inv_freq.len(), w.up.len() / w.inv_freq.len());
        let shapes = [vec![k], vec![k, h], vec![h, k]];
        let prefix = join(&self.prefix, name);
        for ((tensor, shape), values) in CLEX_TENSORS.iter().zip(shapes).zip([w.inv_freq, w.up, w.down]) {
            self.tensors.push(HostTensor { name: join(&prefix, tensor), shape, values, force_f32: true });
        }
    }
}

/// What one architecture adds to the shared skeleton: its HF names and the blocks that
/// differ. [`build`] and [`hf_tensors`] both walk these names, so each is written once.
pub(crate) trait HfArch {
    /// The token embedding (`model.embed_tokens`).
    const EMBED: &'static str;
    /// The parent of the layers (`model.layers`; layer `l` is `model.layers.{l}`).
    const LAYERS: &'static str;
    /// A layer's attention (`self_attn`).
    const ATTENTION: &'static str;
    /// A layer's MLP (`mlp`).
    const MLP: &'static str;
    /// The final norm (`model.norm`).
    const FINAL_NORM: &'static str;
    /// The LM head (`lm_head`).
    const HEAD: &'static str;
    /// The parent of `clex_layer` (`model`).
    const BASE: &'static str;
    /// Whether a tied checkpoint may store its head anyway (LLaMA exports do).
    const HEAD_STORED_WHEN_TIED: bool;
    /// Whether the LM head has a bias (Phi-2).
    const HEAD_BIAS: bool = false;
    /// Whether a layer has one norm, read by attention and MLP alike (Phi-2), instead of
    /// `input_layernorm` and `post_attention_layernorm`.
    const SHARED_NORM: bool = false;

    /// A layer's attention from its view.
    fn attention<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Attention<B>, ModelError>;
    /// A layer's attention into its view.
    fn save_attention<B: Backend>(a: &Attention<B>, out: HostTensorsAt<'_>, cfg: &ModelConfig);
    /// A layer's MLP from its view.
    fn mlp<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Mlp<B>, ModelError>;
    /// A layer's MLP into its view.
    fn save_mlp<B: Backend>(m: &Mlp<B>, out: HostTensorsAt<'_>);
    /// The norm `name` (RMSNorm or LayerNorm) of `w`.
    fn norm<B: Backend>(w: &mut WeightsAt<'_, B>, name: &str, cfg: &ModelConfig) -> Result<Norm<B>, ModelError>;
}

/// A layer's two norms, named alike in every architecture (Phi-2 has only the first).
const INPUT_NORM: &str = "input_layernorm";
const POST_NORM: &str = "post_attention_layernorm";
/// The CLEX layer under [`HfArch::BASE`].
const CLEX_LAYER: &str = "clex_layer";

/// An attention with `cfg`'s head geometry from its q, k, v and o projections: the one place
/// an [`Attention`] is assembled.
pub(crate) fn attention<B: Backend>([q_proj, k_proj, v_proj, o_proj]: [Linear<B>; 4], cfg: &ModelConfig) -> Attention<B> {
    Attention { q_proj, k_proj, v_proj, o_proj, num_heads: cfg.num_heads, num_kv_heads: cfg.num_kv_heads, head_dim: cfg.head_dim }
}

/// q, k, v and the output projection as four separate HF linears called `names` (LLaMA's and
/// Mixtral's `q_proj`..`o_proj`, Phi's `q_proj`..`dense`), biased when `attention_bias`.
pub(crate) fn separate_attention<B: Backend>(
    mut w: WeightsAt<'_, B>,
    cfg: &ModelConfig,
    names: [&str; 4],
) -> Result<Attention<B>, ModelError> {
    let (h, ab) = (cfg.hidden_size, cfg.attention_bias);
    let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let [q, k, v, o] = names;
    let linears = [w.linear(q, h, q_out, ab)?, w.linear(k, h, kv_out, ab)?, w.linear(v, h, kv_out, ab)?, w.linear(o, q_out, h, ab)?];
    Ok(attention(linears, cfg))
}

/// Saves what [`separate_attention`] loads, under the same `names`.
pub(crate) fn save_separate_attention<B: Backend>(a: &Attention<B>, mut out: HostTensorsAt<'_>, names: [&str; 4]) {
    for (name, l) in names.iter().zip([&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]) {
        out.linear(name, l);
    }
}

/// A two-layer MLP whose HF linears are called `names` (GPT-NeoX's `dense_h_to_4h`,
/// `dense_4h_to_h`; Phi's `fc1`, `fc2`), biased when `mlp_bias`.
pub(crate) fn plain_mlp<B: Backend>(mut w: WeightsAt<'_, B>, cfg: &ModelConfig, [up, down]: [&str; 2]) -> Result<Mlp<B>, ModelError> {
    let (h, i, mb) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
    Ok(Mlp::Plain(PlainMlp { dense_h_to_4h: w.linear(up, h, i, mb)?, dense_4h_to_h: w.linear(down, i, h, mb)? }))
}

/// Saves what [`plain_mlp`] loads, under the same `names`.
pub(crate) fn save_plain_mlp<B: Backend>(m: &Mlp<B>, mut out: HostTensorsAt<'_>, names: [&str; 2]) {
    if let Mlp::Plain(m) = m {
        for (name, l) in names.iter().zip([&m.dense_h_to_4h, &m.dense_4h_to_h]) {
            out.linear(name, l);
        }
    }
}

/// The model `cfg` describes from `source`. The order is seeded init's draw order (every
/// layer's attention and MLP, then the embedding, the head and the CLEX layer), which fixes
/// the weights a seed gives.
fn build_arch<A: HfArch, B: Backend>(cfg: ModelConfig, source: &mut dyn WeightSource<B>) -> Result<CausalLm<B>, ModelError> {
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let mut w = WeightsAt::new(source);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for l in 0..cfg.num_layers {
        let mut lw = w.pp(A::LAYERS);
        let mut lw = lw.pp(l);
        let attention = A::attention(lw.pp(A::ATTENTION), &cfg)?;
        let mlp = A::mlp(lw.pp(A::MLP), &cfg)?;
        let input_norm = A::norm(&mut lw, INPUT_NORM, &cfg)?;
        let post_norm = if A::SHARED_NORM { None } else { Some(A::norm(&mut lw, POST_NORM, &cfg)?) };
        layers.push(Block { input_norm, post_norm, attention, mlp, parallel_residual: cfg.use_parallel_residual });
    }
    let embed = w.embedding(A::EMBED, v, h)?;
    let lm_head = if cfg.tie_word_embeddings {
        if A::HEAD_STORED_WHEN_TIED {
            w.tied_copy(A::HEAD, v, h)?;
        }
        None
    } else {
        Some(w.linear(A::HEAD, h, v, A::HEAD_BIAS)?)
    };
    let clex = match ClexLayerConfig::from_rope(&cfg.rope) {
        Some(c) => Some(w.pp(A::BASE).clex_layer(CLEX_LAYER, &c)?),
        None => None,
    };
    let final_norm = A::norm(&mut w, A::FINAL_NORM, &cfg)?;
    Ok(CausalLm::from_parts(cfg, embed, layers, final_norm, lm_head, clex))
}

/// `model`'s tensors under the names [`build_arch`] reads them by, in HF layout.
fn save_arch<A: HfArch, B: Backend>(model: &CausalLm<B>) -> Vec<HostTensor> {
    let cfg = model.config();
    let mut tensors = Vec::new();
    let mut out = HostTensorsAt::new(&mut tensors);
    out.embedding(A::EMBED, &model.embed);
    for (l, block) in model.layers.iter().enumerate() {
        let mut lo = out.pp(A::LAYERS);
        let mut lo = lo.pp(l);
        A::save_attention(&block.attention, lo.pp(A::ATTENTION), cfg);
        A::save_mlp(&block.mlp, lo.pp(A::MLP));
        lo.norm(INPUT_NORM, &block.input_norm);
        if let Some(post_norm) = &block.post_norm {
            lo.norm(POST_NORM, post_norm);
        }
    }
    out.norm(A::FINAL_NORM, &model.final_norm);
    if let Some(head) = &model.lm_head {
        out.linear(A::HEAD, head);
    }
    if let Some(clex) = &model.clex_layer {
        out.pp(A::BASE).clex_layer(CLEX_LAYER, clex);
    }
    tensors
}

/// The model `cfg` describes, its weights from `source`.
pub(crate) fn build<B: Backend>(cfg: ModelConfig, source: &mut dyn WeightSource<B>) -> Result<CausalLm<B>, ModelError> {
    match cfg.arch {
        Architecture::Llama => build_arch::<llama::Llama, B>(cfg, source),
        Architecture::GptNeox => build_arch::<gpt_neox::GptNeox, B>(cfg, source),
        Architecture::Phi => build_arch::<phi::Phi, B>(cfg, source),
        Architecture::Mixtral => build_arch::<mixtral::Mixtral, B>(cfg, source),
    }
}

/// The model `cfg` describes from the tensors of `checkpoint`, on `device` in `dtype` (CLEX
/// parameters in f32).
pub(crate) fn load<B: Backend>(
    cfg: ModelConfig,
    checkpoint: &Weights,
    device: &B::Device,
    dtype: DType,
) -> Result<CausalLm<B>, ModelError> {
    build(cfg, &mut CheckpointWeights { checkpoint, device, dtype })
}

/// The model's tensors under their HF names and layouts.
pub(crate) fn hf_tensors<B: Backend>(model: &CausalLm<B>) -> Vec<HostTensor> {
    match model.config().arch {
        Architecture::Llama => save_arch::<llama::Llama, B>(model),
        Architecture::GptNeox => save_arch::<gpt_neox::GptNeox, B>(model),
        Architecture::Phi => save_arch::<phi::Phi, B>(model),
        Architecture::Mixtral => save_arch::<mixtral::Mixtral, B>(model),
    }
}

/// A checkpoint's tensors on `device` in `dtype`: the [`WeightSource`] of loading (HF
/// directories and, through their host tensors, GGUF files).
struct CheckpointWeights<'a, B: Backend> {
    checkpoint: &'a Weights,
    device: &'a B::Device,
    dtype: DType,
}

impl<B: Backend> CheckpointWeights<'_, B> {
    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>, ModelError> {
        self.checkpoint.tensor(name, shape, self.device, self.dtype)
    }

    fn tensor_of<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), (self.device, self.dtype))
    }
}

impl<B: Backend> WeightSource<B> for CheckpointWeights<'_, B> {
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, ModelError> {
        self.checkpoint.linear(name, d_in, d_out, bias, self.device, self.dtype)
    }

    fn per_head_qkv(&mut self, name: &str, d_in: usize, heads: usize, head_dim: usize, bias: bool) -> Result<[Linear<B>; 3], ModelError> {
        let (d_out, fused_rows) = (heads * head_dim, 3 * heads * head_dim);
        let w = self.checkpoint.f32_values(&join(name, "weight"), &[fused_rows, d_in])?;
        let b = if bias { Some(self.checkpoint.f32_values(&join(name, "bias"), &[fused_rows])?) } else { None };
        let part = |part| {
            let w = self.tensor_of(gpt_neox::take_part(&w, heads, head_dim, d_in, part), [d_out, d_in]);
            let b = b.as_ref().map(|b| Param::from_tensor(self.tensor_of(gpt_neox::take_part(b, heads, head_dim, 1, part), [d_out])));
            Linear { weight: Param::from_tensor(in_out_weight(w, self.device, self.dtype)), bias: b }
        };
        Ok([part(0), part(1), part(2)])
    }

    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding<B>, ModelError> {
        Ok(Embedding { weight: Param::from_tensor(self.tensor(&join(name, "weight"), [vocab, hidden])?) })
    }

    fn rms_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<RmsNorm<B>, ModelError> {
        Ok(RmsNorm { gamma: Param::from_tensor(self.tensor(&join(name, "weight"), [hidden])?), epsilon: eps })
    }

    fn layer_norm(&mut self, name: &str, hidden: usize, eps: f64) -> Result<LayerNorm<B>, ModelError> {
        let mut ln = LayerNormConfig::new(hidden).with_epsilon(eps).init(self.device);
        ln.gamma = Param::from_tensor(self.tensor(&join(name, "weight"), [hidden])?);
        ln.beta = Some(Param::from_tensor(self.tensor(&join(name, "bias"), [hidden])?));
        Ok(ln)
    }

    /// In f32 whatever the model dtype (the ODE runs in f32), `inv_freq` exactly as stored
    /// (docs/CLEX.md §3.5).
    fn clex_layer(&mut self, name: &str, config: &ClexLayerConfig) -> Result<ClexLayer<B>, ModelError> {
        let (k, h) = (config.num_frequencies(), config.hidden());
        let [inv, up, down] = CLEX_TENSORS.map(|t| join(name, t));
        let f32 = DType::F32;
        let inv = self.checkpoint.tensor(&inv, [k], self.device, f32)?;
        let up = self.checkpoint.tensor(&up, [k, h], self.device, f32)?;
        let down = self.checkpoint.tensor(&down, [h, k], self.device, f32)?;
        Ok(config.init_with(inv, up, down)?)
    }

    fn tied_copy(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<(), ModelError> {
        let weight = join(name, "weight");
        if self.checkpoint.contains(&weight) {
            self.checkpoint.f32_values(&weight, &[vocab, hidden])?;
        }
        Ok(())
    }
}

/// The `config.json` keys every architecture reads alike (flattened into each one's mirror).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct HfCommon {
    /// Vocabulary size.
    vocab_size: usize,
    /// Model width.
    hidden_size: usize,
    /// MLP width.
    intermediate_size: usize,
    /// Decoder layers.
    num_hidden_layers: usize,
    /// Query heads.
    pub(crate) num_attention_heads: usize,
    /// LM head shares the embedding (never in Pythia).
    #[serde(default)]
    tie_word_embeddings: bool,
    /// CLEX query log-scaling.
    #[serde(default)]
    log_scale: bool,
    /// BOS id.
    bos_token_id: Option<TokenIds>,
    /// EOS id(s).
    eos_token_id: Option<TokenIds>,
}

/// `raw` as an architecture's config mirror; serde's message names a missing or mistyped key.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(raw: &Value, path: &Path) -> Result<T, ModelError> {
    serde_json::from_value(raw.clone())
        .map_err(|e| ModelError::Config { path: path.to_path_buf(), source: clex_core::ConfigError::Json(e.to_string()) })
}

/// What an architecture's config says beyond [`HfCommon`], in [`ModelConfig`]'s terms.
pub(crate) struct ArchSettings<'a> {
    pub(crate) arch: Architecture,
    pub(crate) num_kv_heads: usize,
    pub(crate) norm_eps: f64,
    pub(crate) attention_bias: bool,
    pub(crate) mlp_bias: bool,
    pub(crate) use_parallel_residual: bool,
    /// The `hidden_act` spelling.
    pub(crate) hidden_act: &'a str,
    /// Sparse mixture-of-experts MLP, if any.
    pub(crate) moe: Option<MoeConfig>,
    /// Attention window, if any.
    pub(crate) sliding_window: Option<usize>,
}

fn activation(name: &str, path: &Path) -> Result<Activation, ModelError> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        other => Err(ModelError::Config {
            path: path.to_path_buf(),
            source: clex_core::ConfigError::InvalidValue {
                key: "hidden_act".into(),
                value: format!("{other:?}"),
                accepted: "silu, gelu, gelu_new, gelu_pytorch_tanh".into(),
            },
        }),
    }
}

impl HfCommon {
    /// The runtime config: these keys, the architecture's `settings`, the parsed `rope` and
    /// the file as read (`raw`); `path` labels errors.
    pub(crate) fn into_config(
        self,
        settings: ArchSettings<'_>,
        rope: RopeConfig,
        raw: Value,
        path: &Path,
    ) -> Result<ModelConfig, ModelError> {
        let (heads, kv_heads) = (self.num_attention_heads, settings.num_kv_heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                source: clex_core::ConfigError::InvalidValue {
                    key: "num_key_value_heads".into(),
                    value: kv_heads.to_string(),
                    accepted: format!("a positive divisor of num_attention_heads ({heads})"),
                },
            });
        }
        Ok(ModelConfig {
            arch: settings.arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: rope.head_dim,
            norm_eps: settings.norm_eps,
            attention_bias: settings.attention_bias,
            mlp_bias: settings.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            use_parallel_residual: settings.use_parallel_residual,
            moe: settings.moe,
            sliding_window: settings.sliding_window,
            activation: activation(settings.hidden_act, path)?,
            log_scale: self.log_scale,
            rope,
            bos_token_id: self.bos_token_id.and_then(|b| b.to_vec().first().copied()),
            eos_token_ids: self.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
            raw,
        })
    }
}
