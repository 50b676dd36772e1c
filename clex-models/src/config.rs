//! The model settings, read from HF `config.json` into [`ModelConfig`] (each architecture's
//! serde mirror of the file is in its `arch/` file); [`ModelConfig::with_rope`], the one way
//! to run a model under another rope.

use std::path::Path;

use clex_core::{ClexParams, ConfigError, RopeConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::arch;
use crate::error::ModelError;

/// The architectures we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// LLaMA family (also `mistral` configs without sliding windows).
    Llama,
    /// GPT-NeoX / Pythia.
    GptNeox,
    /// Phi-2 (and CLEX-Phi-2): one LayerNorm per block, parallel residual, partial rotary,
    /// biases everywhere, LM head with a bias.
    Phi,
    /// Mixtral (and CLEX-Mixtral): LLaMA attention and norms, a sparse mixture of SwiGLU
    /// experts in place of the MLP.
    Mixtral,
}

impl Architecture {
    /// The `model_type` spelling.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::GptNeox => "gpt_neox",
            Architecture::Phi => "phi",
            Architecture::Mixtral => "mixtral",
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

/// A sparse mixture-of-experts MLP (Mixtral's `block_sparse_moe`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    /// Experts per layer (`num_local_experts`).
    pub num_experts: usize,
    /// Experts each token is routed to (`num_experts_per_tok`).
    pub experts_per_token: usize,
    /// Weight of the router's load-balancing loss in training (`router_aux_loss_coef`).
    pub router_aux_loss_coef: f64,
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

/// Runtime settings shared by every architecture.
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
    /// Sparse mixture-of-experts MLP (Mixtral); `None` for a dense MLP.
    pub moe: Option<MoeConfig>,
    /// Keys older than this many positions are not attended to (Mixtral's `sliding_window`).
    pub sliding_window: Option<usize>,
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

impl ModelConfig {
    /// Reads and parses `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = crate::weights::read_regular(path)?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Json { path: path.to_path_buf(), message: clex_core::config::echo_long(&e.to_string()) })?;
        Self::from_json(raw, path)
    }

    /// Parses a config value; `path` only labels errors.
    pub fn from_json(raw: Value, path: &Path) -> Result<Self, ModelError> {
        let cfg_err = |source| ModelError::Config { path: path.to_path_buf(), source };
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let rope = RopeConfig::from_hf_json(&raw).map_err(cfg_err)?;
        check_keys(&raw).map_err(cfg_err)?;
        let parsed = match model_type.as_str() {
            "llama" | "mistral" => arch::llama::config(raw, rope, path),
            "gpt_neox" => arch::gpt_neox::config(raw, rope, path),
            "phi" => arch::phi::config(raw, rope, path),
            "mixtral" => arch::mixtral::config(raw, rope, path),
            other => Err(ModelError::UnsupportedArchitecture { path: path.to_path_buf(), found: clex_core::config::echo(other) }),
        };
        // serde's messages quote the value: keep them one short line.
        parsed.map_err(|e| match e {
            ModelError::Config { path, source: ConfigError::Json(m) } => {
                ModelError::Config { path, source: ConfigError::Json(clex_core::config::echo_long(&m)) }
            }
            ModelError::Config { path, source: ConfigError::InvalidValue { key, value, accepted } } => {
                let value = clex_core::config::echo(&value);
                ModelError::Config { path, source: ConfigError::InvalidValue { key, value, accepted } }
            }
            e => e,
        })
    }

    /// True when the model uses CLEX.
    pub fn is_clex(&self) -> bool {
        matches!(self.rope.scaling, clex_core::RopeScaling::Clex(_))
    }
}

/// The rope kinds a model can be run under in place of its own (`clex --rope-scaling`,
/// `cargo xtask train --rope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RopeKind {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by the factor.
    Linear,
    /// Dynamic NTK: the base grows with the sequence length.
    Dynamic,
    /// YaRN.
    Yarn,
    /// A fresh CLEX layer (D = 0: θ(t) is NTK scaling with α = 2t − 1); the factor is T_max.
    Clex,
}

/// A rope to run a model under in place of its own: the argument of [`ModelConfig::with_rope`].
#[derive(Debug, Clone, PartialEq)]
pub enum RopeChange {
    /// Plain RoPE.
    None,
    /// Position interpolation with this factor.
    Linear(f64),
    /// Dynamic NTK with this factor.
    Dynamic(f64),
    /// YaRN with this factor (the other settings at transformers' defaults).
    Yarn(f64),
    /// A fresh CLEX layer with these settings (usually [`ClexParams::fresh`]).
    Clex(ClexParams),
}

impl RopeChange {
    /// `kind` with `factor`: the scaling factor, or for CLEX T_max (a whole number ≥ 1, with
    /// the other settings [`ClexParams::fresh`]).
    pub fn new(kind: RopeKind, factor: f64) -> Result<Self, ModelError> {
        let max = clex_core::config::limits::MAX_ROPE_FACTOR;
        if kind != RopeKind::None && !(factor > 0.0 && factor <= max) {
            return Err(ModelError::Invalid(format!("rope factor {factor}: accepted values: a number > 0 and <= {max:e}")));
        }
        Ok(match kind {
            RopeKind::None => RopeChange::None,
            RopeKind::Linear => RopeChange::Linear(factor),
            RopeKind::Dynamic => RopeChange::Dynamic(factor),
            RopeKind::Yarn => RopeChange::Yarn(factor),
            RopeKind::Clex => {
                if factor < 1.0 || factor.fract() != 0.0 {
                    return Err(ModelError::Invalid(format!("rope factor {factor}: for clex it is T_max, a whole number ≥ 1")));
                }
                RopeChange::Clex(ClexParams::fresh(factor as usize))
            }
        })
    }

    /// The HF `rope_scaling` block (null for plain RoPE); CLEX in the released checkpoints'
    /// spelling (`factor` 1 is a dummy HF's per-layer rope reads).
    pub fn hf_block(&self) -> Value {
        match self {
            RopeChange::None => Value::Null,
            RopeChange::Linear(f) => json!({"type": "linear", "factor": f}),
            RopeChange::Dynamic(f) => json!({"type": "dynamic", "factor": f}),
            RopeChange::Yarn(f) => json!({"type": "yarn", "factor": f}),
            RopeChange::Clex(p) => json!({"type": "clex", "max_factor": p.max_factor, "param_factor": p.param_factor,
                                          "act": p.act.as_str(), "time_dt": p.time_dt, "factor": 1}),
        }
    }
}

impl ModelConfig {
    /// This config run under `rope` (and P = `max_position_embeddings` when given): the one
    /// way to change a model's rope. `raw` (what [`crate::save_model`] writes) is edited and
    /// parsed again, so the typed config and `raw` cannot disagree. A CLEX model's rope is
    /// learned and cannot be replaced. A [`RopeChange::Clex`] config loads a non-CLEX
    /// checkpoint with a fresh layer ([`crate::ModelSource::load_with`]).
    pub fn with_rope(&self, rope: &RopeChange, max_position_embeddings: Option<usize>) -> Result<ModelConfig, ModelError> {
        if self.is_clex() {
            return Err(ModelError::Invalid("a CLEX model's rope is learned and cannot be replaced".into()));
        }
        let mut raw = self.raw.clone();
        // The config's own partial rotary factor, looked up where clex-core's parser looks
        // (the rope block transformers 5 keeps it in, then the top level, then GPT-NeoX's
        // rotary_pct), carried over as written: re-deriving it as rotary_dim / head_dim can
        // come back one dim short (58 / 100 · 100 = 57.99999999999999).
        let rope_block = if raw.get("rope_parameters").is_some() { "/rope_parameters" } else { "/rope_scaling" };
        let factor = [format!("{rope_block}/partial_rotary_factor"), "/partial_rotary_factor".into(), "/rotary_pct".into()]
            .iter()
            .find_map(|k| raw.pointer(k).filter(|v| v.is_number()).cloned());
        let obj = raw.as_object_mut().ok_or_else(|| ModelError::Invalid("the model's config.json is not a JSON object".into()))?;
        obj.remove("rope_parameters");
        if self.rope.rotary_dim != self.rope.head_dim {
            let derived = self.rope.rotary_dim as f64 / self.rope.head_dim as f64;
            obj.insert("partial_rotary_factor".into(), factor.unwrap_or_else(|| derived.into()));
        }
        obj.insert("rope_theta".into(), self.rope.theta.into());
        obj.insert("rope_scaling".into(), rope.hf_block());
        if let Some(p) = max_position_embeddings {
            obj.insert("max_position_embeddings".into(), p.into());
        }
        Self::from_json(raw, Path::new("config.json (rope replaced)"))
    }
}

/// Largest `vocab_size` (token ids are u32; real vocabularies: 32K to 256K).
pub const MAX_VOCAB: usize = 1 << 31;
/// Largest `hidden_size` / `intermediate_size` (real models: up to 2^15).
pub const MAX_WIDTH: usize = 1 << 22;
/// Largest `num_hidden_layers` / `num_attention_heads` / `num_key_value_heads`.
pub const MAX_COUNT: usize = 1 << 16;

/// An integer key of `config.json` with its accepted range.
struct SizeKey {
    key: &'static str,
    max: usize,
}

/// The size keys every architecture reads, bounded so that every size product stays far
/// inside 64 bits (the memory they need is checked against the machine at load time:
/// [`ModelConfig::weight_bytes`]).
const SIZE_KEYS: &[SizeKey] = &[
    SizeKey { key: "vocab_size", max: MAX_VOCAB },
    SizeKey { key: "hidden_size", max: MAX_WIDTH },
    SizeKey { key: "intermediate_size", max: MAX_WIDTH },
    SizeKey { key: "num_hidden_layers", max: MAX_COUNT },
    SizeKey { key: "num_attention_heads", max: MAX_COUNT },
    SizeKey { key: "num_key_value_heads", max: MAX_COUNT },
    SizeKey { key: "num_local_experts", max: MAX_COUNT },
    SizeKey { key: "num_experts_per_tok", max: MAX_COUNT },
];

/// Keys read as booleans.
const BOOL_KEYS: &[&str] = &["tie_word_embeddings", "log_scale", "attention_bias", "mlp_bias", "use_parallel_residual"];

/// Keys read as norm epsilons.
const EPS_KEYS: &[&str] = &["rms_norm_eps", "layer_norm_eps"];

/// Keys holding one token id or a list of them, and whether the id must be inside the
/// vocabulary: BOS is fed to the embedding; EOS ids are only compared with sampled ids (a
/// tokenizer's control token past the model's rows, as llama.cpp files have, never matches).
const TOKEN_ID_KEYS: &[(&str, bool)] = &[("bos_token_id", true), ("eos_token_id", false)];

fn invalid(key: &str, value: &Value, accepted: String) -> ConfigError {
    ConfigError::InvalidValue { key: key.into(), value: clex_core::config::echo(&value.to_string()), accepted }
}

/// The validation pass over the keys the architectures read, before any of them sizes
/// anything: each key's type and range, named with the value (cut short) and what is
/// accepted, so serde's messages (which drop the key) are never the ones a user sees, and
/// token ids inside the vocabulary.
fn check_keys(raw: &Value) -> Result<(), ConfigError> {
    let Some(obj) = raw.as_object() else {
        return Err(invalid("config", raw, "a JSON object".into()));
    };
    let present = |key: &str| obj.get(key).filter(|v| !v.is_null());
    for k in SIZE_KEYS {
        if let Some(v) = present(k.key)
            && !v.as_u64().is_some_and(|n| n >= 1 && n as u128 <= k.max as u128)
        {
            return Err(invalid(k.key, v, format!("an integer >= 1 and <= {}", k.max)));
        }
    }
    for &key in BOOL_KEYS {
        if let Some(v) = present(key)
            && !v.is_boolean()
        {
            return Err(invalid(key, v, "true, false".into()));
        }
    }
    for &key in EPS_KEYS {
        if let Some(v) = present(key)
            && !v.as_f64().is_some_and(|x| x.is_finite() && (0.0..1.0).contains(&x))
        {
            return Err(invalid(key, v, "a number >= 0 and < 1".into()));
        }
    }
    for key in ["hidden_act", "model_type"] {
        if let Some(v) = present(key)
            && !v.is_string()
        {
            return Err(invalid(key, v, "a string".into()));
        }
    }
    let vocab = present("vocab_size").and_then(Value::as_u64);
    for &(key, in_vocab) in TOKEN_ID_KEYS {
        let Some(v) = present(key) else { continue };
        let vocab = vocab.filter(|_| in_vocab);
        let ids: Vec<&Value> = match v.as_array() {
            Some(list) => list.iter().collect(),
            None => vec![v],
        };
        let range = match vocab {
            Some(n) => format!("an integer from 0 to {} (vocab_size {n} - 1), or a list of them", n - 1),
            None => format!("an integer from 0 to {}, or a list of them", u32::MAX),
        };
        for id in ids {
            let ok = id.as_u64().is_some_and(|i| i <= u32::MAX as u64 && vocab.is_none_or(|n| i < n));
            if !ok {
                return Err(invalid(key, id, range));
            }
        }
    }
    Ok(())
}

impl ModelConfig {
    /// Parameters of the model this config describes (an upper bound: biases everywhere a
    /// config may have them, the CLEX layer included), with checked arithmetic; None when the
    /// count does not fit in 64 bits.
    pub fn parameter_count(&self) -> Option<u64> {
        let n = |x: usize| x as u64;
        let (h, i, v, l) = (n(self.hidden_size), n(self.intermediate_size), n(self.vocab_size), n(self.num_layers));
        let q = n(self.num_heads).checked_mul(n(self.head_dim))?;
        let kv = n(self.num_kv_heads).checked_mul(n(self.head_dim))?;
        // q, k, v, o with biases.
        let attention = h
            .checked_mul(q.checked_mul(2)?.checked_add(kv.checked_mul(2)?)?)?
            .checked_add(q.checked_add(kv.checked_mul(2)?)?.checked_add(h)?)?;
        let experts = self.raw.get("num_local_experts").and_then(Value::as_u64).unwrap_or(1);
        // gate, up, down with biases, per expert, plus the router.
        let mlp = h
            .checked_mul(i)?
            .checked_mul(3)?
            .checked_add(i.checked_mul(2)?)?
            .checked_add(h)?
            .checked_mul(experts)?
            .checked_add(h.checked_mul(experts)?)?;
        let norms = h.checked_mul(4)?;
        let layers = l.checked_mul(attention.checked_add(mlp)?.checked_add(norms)?)?;
        let embeddings = v.checked_mul(h)?.checked_mul(if self.tie_word_embeddings { 1 } else { 2 })?.checked_add(v)?;
        let clex = match &self.rope.scaling {
            clex_core::RopeScaling::Clex(p) => {
                let k = n(self.rope.rotary_dim / 2);
                k.checked_mul(k)?.checked_mul(n(p.param_factor))?.checked_mul(2)?.checked_add(k)?
            }
            _ => 0,
        };
        layers.checked_add(embeddings)?.checked_add(clex)?.checked_add(h.checked_mul(2)?)
    }

    /// Bytes the weights take at `bytes_per_value` (4 for f32), None beyond 64 bits.
    pub fn weight_bytes(&self, bytes_per_value: u64) -> Option<u64> {
        self.parameter_count()?.checked_mul(bytes_per_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: Value) -> ModelConfig {
        let mut raw = json!({"model_type": "llama", "vocab_size": 256, "hidden_size": 200, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128});
        raw.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ModelConfig::from_json(raw, Path::new("config.json")).unwrap()
    }

    /// with_rope keeps the config's partial rotary factor as written (here inside
    /// rope_parameters, where transformers 5 puts it, and one whose product is not whole:
    /// 100 · 0.585 → 58 dims, as transformers' int()), and adds none for full rotary.
    #[test]
    fn rope_override_carries_the_partial_rotary_factor() {
        let linear = RopeChange::new(RopeKind::Linear, 4.0).unwrap();
        let partial = config(json!({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.585}}));
        assert_eq!((partial.rope.head_dim, partial.rope.rotary_dim), (100, 58));
        let c = partial.with_rope(&linear, None).unwrap();
        assert_eq!((c.rope.head_dim, c.rope.rotary_dim, c.rope.scaling.kind()), (100, 58, "linear"));
        assert_eq!(c.raw["partial_rotary_factor"], 0.585);
        let full = config(json!({}));
        let c = full.with_rope(&linear, None).unwrap();
        assert_eq!((c.rope.rotary_dim, c.raw.get("partial_rotary_factor")), (100, None));
    }

    /// The typed rope and `raw` change together: P, the CLEX settings and the base, read
    /// back from `raw` alone; a CLEX model refuses; a fractional T_max is refused.
    #[test]
    fn with_rope_updates_the_typed_config_and_raw_together() {
        let base = config(json!({"rope_theta": 5000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}));
        let c = base.with_rope(&RopeChange::new(RopeKind::Clex, 4.0).unwrap(), Some(64)).unwrap();
        let again = ModelConfig::from_json(c.raw.clone(), Path::new("raw")).unwrap();
        assert_eq!(c.rope, again.rope);
        assert_eq!(c.rope.scaling, clex_core::RopeScaling::Clex(ClexParams::fresh(4)));
        assert_eq!((c.rope.max_position_embeddings, c.rope.theta), (64, 5000.0));
        let none = base.with_rope(&RopeChange::None, None).unwrap();
        assert_eq!((none.rope.scaling.kind(), none.rope.max_position_embeddings), ("default", 128));
        let err = c.with_rope(&RopeChange::None, None).unwrap_err().to_string();
        assert!(err.contains("CLEX model"), "{err}");
        let err = RopeChange::new(RopeKind::Clex, 2.5).unwrap_err().to_string();
        assert!(err.contains("2.5") && err.contains("T_max"), "{err}");
    }
}
