//! LLaMA-family checkpoints (LLaMA 1-3, Mistral without sliding window, CLEX-LLaMA):
//! RMSNorm, SwiGLU, GQA, optional biases, tied or untied head, `model.clex_layer.*`.
//! This file holds the `config.json` mirror, the HF tensor names and the blocks LLaMA builds
//! its own way; the forward is [`crate::CausalLm`]'s.

use std::path::Path;

use burn::tensor::backend::Backend;
use clex_core::RopeConfig;
use serde::Deserialize;
use serde_json::Value;

use super::{ArchSettings, HfArch, HfCommon, HostTensorsAt, WeightsAt};
use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::layers::{GatedMlp, Mlp, Norm};

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_silu() -> String {
    "silu".into()
}

/// LLaMA `config.json` (the keys we read; rope keys are read by [`RopeConfig`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LlamaConfig {
    /// Keys shared with GPT-NeoX.
    #[serde(flatten)]
    common: HfCommon,
    /// Key/value heads (GQA); defaults to the query heads.
    num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    /// Biases on q/k/v/o.
    #[serde(default)]
    attention_bias: bool,
    /// Biases on the MLP.
    #[serde(default)]
    mlp_bias: bool,
    /// MLP activation.
    #[serde(default = "default_silu")]
    hidden_act: String,
    /// Mistral's sliding window (keys older than it are not attended; LLaMA has none).
    #[serde(default)]
    sliding_window: Option<usize>,
}

/// The runtime config of a LLaMA `config.json` (`raw`) with its parsed `rope`.
pub(crate) fn config(raw: Value, rope: RopeConfig, path: &Path) -> Result<ModelConfig, ModelError> {
    let c: LlamaConfig = super::parse_config(&raw, path)?;
    if c.sliding_window == Some(0) {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            source: clex_core::ConfigError::InvalidValue {
                key: "sliding_window".into(),
                value: "0".into(),
                accepted: "null or a positive number of positions".into(),
            },
        });
    }
    let settings = ArchSettings {
        arch: Architecture::Llama,
        num_kv_heads: c.num_key_value_heads.unwrap_or(c.common.num_attention_heads),
        norm_eps: c.rms_norm_eps,
        attention_bias: c.attention_bias,
        mlp_bias: c.mlp_bias,
        use_parallel_residual: false,
        hidden_act: &c.hidden_act,
        moe: None,
        sliding_window: c.sliding_window,
    };
    c.common.into_config(settings, rope, raw, path)
}

/// LLaMA's HF names and blocks.
pub(crate) struct Llama;

/// q, k, v, o under [`Llama::ATTENTION`].
const ATTENTION_LINEARS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
/// gate, up, down under [`Llama::MLP`].
const MLP_LINEARS: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

impl HfArch for Llama {
    const EMBED: &'static str = "model.embed_tokens";
    const LAYERS: &'static str = "model.layers";
    const ATTENTION: &'static str = "self_attn";
    const MLP: &'static str = "mlp";
    const FINAL_NORM: &'static str = "model.norm";
    const HEAD: &'static str = "lm_head";
    const BASE: &'static str = "model";
    const HEAD_STORED_WHEN_TIED: bool = true;

    fn attention<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Attention<B>, ModelError> {
        super::separate_attention(w, cfg, ATTENTION_LINEARS)
    }

    fn save_attention<B: Backend>(a: &Attention<B>, out: HostTensorsAt<'_>, _cfg: &ModelConfig) {
        super::save_separate_attention(a, out, ATTENTION_LINEARS);
    }

    fn mlp<B: Backend>(mut w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Mlp<B>, ModelError> {
        let (h, i, mb) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let [gate, up, down] = MLP_LINEARS;
        Ok(Mlp::Gated(GatedMlp {
            gate_proj: w.linear(gate, h, i, mb)?,
            up_proj: w.linear(up, h, i, mb)?,
            down_proj: w.linear(down, i, h, mb)?,
        }))
    }

    fn save_mlp<B: Backend>(m: &Mlp<B>, mut out: HostTensorsAt<'_>) {
        if let Mlp::Gated(m) = m {
            for (name, l) in MLP_LINEARS.iter().zip([&m.gate_proj, &m.up_proj, &m.down_proj]) {
                out.linear(name, l);
            }
        }
    }

    fn norm<B: Backend>(w: &mut WeightsAt<'_, B>, name: &str, cfg: &ModelConfig) -> Result<Norm<B>, ModelError> {
        Ok(Norm::Rms(w.rms_norm(name, cfg.hidden_size, cfg.norm_eps)?))
    }
}
