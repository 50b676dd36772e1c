//! The model settings, read from HF `config.json` into [`ModelConfig`] (each architecture's
//! serde mirror of the file is in its `arch/` file); [`ModelConfig::with_rope`], the one way
//! to run a model under another rope.

use std::path::Path;

use clex_core::{ClexParams, RopeConfig};
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
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let rope = RopeConfig::from_hf_json(&raw).map_err(cfg_err)?;
        match model_type.as_str() {
            "llama" | "mistral" => arch::llama::config(raw, rope, path),
            "gpt_neox" => arch::gpt_neox::config(raw, rope, path),
            other => Err(ModelError::UnsupportedArchitecture { path: path.to_path_buf(), found: other.to_string() }),
        }
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
