//! The model settings, read from HF `config.json`: serde structs that mirror the file
//! (same field names, serde defaults for optional keys), converted once into [`ModelConfig`].

use std::path::Path;

use clex_core::RopeConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ModelError;

/// The architectures we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// LLaMA family (also `mistral` configs without sliding windows).
    Llama,
    /// GPT-NeoX / Pythia.
    GptNeox,
}

impl Architecture {
    /// The `model_type` spelling.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::GptNeox => "gpt_neox",
        }
    }
}

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (LLaMA's SwiGLU gate).
    Silu,
    /// Exact erf GELU (GPT-NeoX `gelu`).
    Gelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// `eos_token_id` may be one id or a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// All ids.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_silu() -> String {
    "silu".into()
}
fn default_gelu() -> String {
    "gelu".into()
}

/// LLaMA `config.json` (the keys we read; rope keys are read by [`RopeConfig`]).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to the query heads.
    pub num_key_value_heads: Option<usize>,
    /// Head size override.
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// LM head shares the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MLP activation.
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// CLEX query log-scaling.
    #[serde(default)]
    pub log_scale: bool,
    /// BOS id.
    pub bos_token_id: Option<TokenIds>,
    /// EOS id(s).
    pub eos_token_id: Option<TokenIds>,
}

/// GPT-NeoX `config.json` (the keys we read).
#[derive(Debug, Clone, Deserialize)]
pub struct GptNeoxConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` when true, sequential otherwise.
    #[serde(default = "default_true")]
    pub use_parallel_residual: bool,
    /// Biases on qkv and dense (transformers 5 key; always true before).
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    /// MLP activation.
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// LM head shares the embedding (never in Pythia).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// CLEX query log-scaling.
    #[serde(default)]
    pub log_scale: bool,
    /// BOS id.
    pub bos_token_id: Option<TokenIds>,
    /// EOS id(s).
    pub eos_token_id: Option<TokenIds>,
}

/// Runtime settings shared by both architectures.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Which architecture.
    pub arch: Architecture,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Norm epsilon.
    pub norm_eps: f64,
    /// Biases on the attention projections.
    pub attention_bias: bool,
    /// Biases on the MLP.
    pub mlp_bias: bool,
    /// LM head shares the embedding.
    pub tie_word_embeddings: bool,
    /// GPT-NeoX parallel residual.
    pub use_parallel_residual: bool,
    /// MLP activation.
    pub activation: Activation,
    /// CLEX query log-scaling λ(N) = ln N / ln P.
    pub log_scale: bool,
    /// Rotary settings (kind, base, rotary dims, P).
    pub rope: RopeConfig,
    /// BOS id, if any.
    pub bos_token_id: Option<u32>,
    /// EOS ids.
    pub eos_token_ids: Vec<u32>,
    /// The config.json as read; saving writes it back with our changes.
    pub raw: Value,
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

impl ModelConfig {
    /// Reads and parses `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| ModelError::Json { path: path.to_path_buf(), message: e.to_string() })?;
        Self::from_json(raw, path)
    }

    /// Parses a config value; `path` only labels errors.
    pub fn from_json(raw: Value, path: &Path) -> Result<Self, ModelError> {
        let cfg_err = |source| ModelError::Config { path: path.to_path_buf(), source };
        let serde_err = |e: serde_json::Error| {
            // serde names the missing field in its message ("missing field `vocab_size`").
            cfg_err(clex_core::ConfigError::Json(e.to_string()))
        };
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let rope = RopeConfig::from_hf_json(&raw).map_err(cfg_err)?;
        match model_type.as_str() {
            "llama" | "mistral" => {
                let c: LlamaConfig = serde_json::from_value(raw.clone()).map_err(serde_err)?;
                let num_kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
                Self::check_heads(c.num_attention_heads, num_kv_heads, path)?;
                Ok(ModelConfig {
                    arch: Architecture::Llama,
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    intermediate_size: c.intermediate_size,
                    num_layers: c.num_hidden_layers,
                    num_heads: c.num_attention_heads,
                    num_kv_heads,
                    head_dim: rope.head_dim,
                    norm_eps: c.rms_norm_eps,
                    attention_bias: c.attention_bias,
                    mlp_bias: c.mlp_bias,
                    tie_word_embeddings: c.tie_word_embeddings,
                    use_parallel_residual: false,
                    activation: activation(&c.hidden_act, path)?,
                    log_scale: c.log_scale,
                    rope,
                    bos_token_id: c.bos_token_id.and_then(|b| b.to_vec().first().copied()),
                    eos_token_ids: c.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
                    raw,
                })
            }
            "gpt_neox" => {
                let c: GptNeoxConfig = serde_json::from_value(raw.clone()).map_err(serde_err)?;
                Self::check_heads(c.num_attention_heads, c.num_attention_heads, path)?;
                Ok(ModelConfig {
                    arch: Architecture::GptNeox,
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    intermediate_size: c.intermediate_size,
                    num_layers: c.num_hidden_layers,
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_attention_heads,
                    head_dim: rope.head_dim,
                    norm_eps: c.layer_norm_eps,
                    attention_bias: c.attention_bias,
                    mlp_bias: true,
                    tie_word_embeddings: c.tie_word_embeddings,
                    use_parallel_residual: c.use_parallel_residual,
                    activation: activation(&c.hidden_act, path)?,
                    log_scale: c.log_scale,
                    rope,
                    bos_token_id: c.bos_token_id.and_then(|b| b.to_vec().first().copied()),
                    eos_token_ids: c.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
                    raw,
                })
            }
            other => Err(ModelError::UnsupportedArchitecture { path: path.to_path_buf(), found: other.to_string() }),
        }
    }

    fn check_heads(heads: usize, kv_heads: usize, path: &Path) -> Result<(), ModelError> {
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
        Ok(())
    }

    /// True when the model uses CLEX.
    pub fn is_clex(&self) -> bool {
        matches!(self.rope.scaling, clex_core::RopeScaling::Clex(_))
    }
}
