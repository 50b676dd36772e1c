//! Phi-2 checkpoints (transformers' `phi` and CLEX-Phi-2, which share the names): q/k/v and
//! `dense` with biases, partial rotary (`partial_rotary_factor`; CLEX runs over the rotary
//! dims), one LayerNorm per block read by attention and MLP (`x + attn(LN x) + mlp(LN x)`),
//! `fc1`/`fc2` with biases and `gelu_new`, `model.final_layernorm`, an untied `lm_head` with a
//! bias, `model.clex_layer.*`. This file holds the `config.json` mirror, the HF tensor names
//! and the blocks Phi-2 builds its own way; the forward is [`crate::CausalLm`]'s.

use std::path::Path;

use burn::tensor::backend::Backend;
use clex_core::RopeConfig;
use serde::Deserialize;
use serde_json::Value;

use super::{ArchSettings, HfArch, HfCommon, HostTensorsAt, WeightsAt};
use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::layers::{Mlp, Norm};

fn default_ln_eps() -> f64 {
    1e-5
}
fn default_gelu_new() -> String {
    "gelu_new".into()
}

/// Phi `config.json` (the keys we read; rope keys, `partial_rotary_factor` included, are read
/// by [`RopeConfig`]; CLEX's dummy `rope_scaling.factor` is ignored there).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PhiConfig {
    /// Keys shared with the other architectures.
    #[serde(flatten)]
    common: HfCommon,
    /// Key/value heads; defaults to the query heads.
    num_key_value_heads: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    /// MLP activation.
    #[serde(default = "default_gelu_new")]
    hidden_act: String,
    /// LayerNorms on q and k: not supported (the official CLEX code cannot run it either,
    /// and no released Phi-2 uses it).
    #[serde(default)]
    qk_layernorm: bool,
}

/// The runtime config of a Phi `config.json` (`raw`) with its parsed `rope`.
pub(crate) fn config(raw: Value, rope: RopeConfig, path: &Path) -> Result<ModelConfig, ModelError> {
    let c: PhiConfig = super::parse_config(&raw, path)?;
    if c.qk_layernorm {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            source: clex_core::ConfigError::InvalidValue {
                key: "qk_layernorm".into(),
                value: "true".into(),
                accepted: "false (no released Phi-2 uses q/k LayerNorms)".into(),
            },
        });
    }
    let settings = ArchSettings {
        arch: Architecture::Phi,
        num_kv_heads: c.num_key_value_heads.unwrap_or(c.common.num_attention_heads),
        norm_eps: c.layer_norm_eps,
        attention_bias: true,
        mlp_bias: true,
        use_parallel_residual: true,
        hidden_act: &c.hidden_act,
        moe: None,
        sliding_window: None,
    };
    c.common.into_config(settings, rope, raw, path)
}

/// Phi-2's HF names and blocks.
pub(crate) struct Phi;

/// q, k, v and the output projection under [`Phi::ATTENTION`].
const ATTENTION_LINEARS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "dense"];
/// In and out under [`Phi::MLP`].
const MLP_LINEARS: [&str; 2] = ["fc1", "fc2"];

impl HfArch for Phi {
    const EMBED: &'static str = "model.embed_tokens";
    const LAYERS: &'static str = "model.layers";
    const ATTENTION: &'static str = "self_attn";
    const MLP: &'static str = "mlp";
    const FINAL_NORM: &'static str = "model.final_layernorm";
    const HEAD: &'static str = "lm_head";
    const BASE: &'static str = "model";
    const HEAD_STORED_WHEN_TIED: bool = false;
    const HEAD_BIAS: bool = true;
    const SHARED_NORM: bool = true;

    fn attention<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Attention<B>, ModelError> {
        super::separate_attention(w, cfg, ATTENTION_LINEARS)
    }

    fn save_attention<B: Backend>(a: &Attention<B>, out: HostTensorsAt<'_>, _cfg: &ModelConfig) {
        super::save_separate_attention(a, out, ATTENTION_LINEARS);
    }

    fn mlp<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Mlp<B>, ModelError> {
        super::plain_mlp(w, cfg, MLP_LINEARS)
    }

    fn save_mlp<B: Backend>(m: &Mlp<B>, out: HostTensorsAt<'_>) {
        super::save_plain_mlp(m, out, MLP_LINEARS);
    }

    fn norm<B: Backend>(w: &mut WeightsAt<'_, B>, name: &str, cfg: &ModelConfig) -> Result<Norm<B>, ModelError> {
        Ok(Norm::Layer(w.layer_norm(name, cfg.hidden_size, cfg.norm_eps)?))
    }
}
