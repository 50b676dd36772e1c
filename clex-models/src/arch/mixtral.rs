//! Mixtral checkpoints (Mixtral 8x7B and CLEX-Mixtral, transformers 4.36 names): LLaMA's
//! GQA attention and RMSNorms, and in place of the MLP a sparse mixture of SwiGLU experts,
//! `block_sparse_moe.gate` (router) and `block_sparse_moe.experts.{e}.{w1,w2,w3}`
//! ([`crate::layers::MoeMlp`]); `sliding_window` masks keys older than the window. This file
//! holds the `config.json` mirror and the HF tensor names; the forward is [`crate::CausalLm`]'s.

use std::path::Path;

use burn::tensor::backend::Backend;
use clex_core::RopeConfig;
use serde::Deserialize;
use serde_json::Value;

use super::llama::Llama;
use super::{ArchSettings, HfArch, HfCommon, HostTensorsAt, WeightsAt};
use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig, MoeConfig};
use crate::error::ModelError;
use crate::layers::{GatedMlp, Mlp, MoeMlp, Norm};

fn default_rms_eps() -> f64 {
    1e-5
}
fn default_silu() -> String {
    "silu".into()
}
fn default_experts() -> usize {
    8
}
fn default_experts_per_token() -> usize {
    2
}
/// transformers' default `router_aux_loss_coef`.
fn default_aux_coef() -> f64 {
    0.001
}

/// Mixtral `config.json` (the keys we read; rope keys are read by [`RopeConfig`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MixtralConfig {
    /// Keys shared with the other architectures.
    #[serde(flatten)]
    common: HfCommon,
    /// Key/value heads (GQA); defaults to the query heads.
    num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    /// Expert activation.
    #[serde(default = "default_silu")]
    hidden_act: String,
    /// Experts per layer.
    #[serde(default = "default_experts")]
    num_local_experts: usize,
    /// Experts per token.
    #[serde(default = "default_experts_per_token")]
    num_experts_per_tok: usize,
    /// Weight of the load-balancing loss (training only).
    #[serde(default = "default_aux_coef")]
    router_aux_loss_coef: f64,
    /// Attention window (null: none).
    #[serde(default)]
    sliding_window: Option<usize>,
}

/// The runtime config of a Mixtral `config.json` (`raw`) with its parsed `rope`.
pub(crate) fn config(raw: Value, rope: RopeConfig, path: &Path) -> Result<ModelConfig, ModelError> {
    let c: MixtralConfig = super::parse_config(&raw, path)?;
    let invalid = |key: &str, value: String, accepted: String| ModelError::Config {
        path: path.to_path_buf(),
        source: clex_core::ConfigError::InvalidValue { key: key.into(), value, accepted },
    };
    if c.num_local_experts == 0 {
        return Err(invalid("num_local_experts", "0".into(), "at least 1".into()));
    }
    if c.num_experts_per_tok == 0 || c.num_experts_per_tok > c.num_local_experts {
        let accepted = format!("1..={} (num_local_experts)", c.num_local_experts);
        return Err(invalid("num_experts_per_tok", c.num_experts_per_tok.to_string(), accepted));
    }
    if c.sliding_window == Some(0) {
        return Err(invalid("sliding_window", "0".into(), "null or a positive number of positions".into()));
    }
    let settings = ArchSettings {
        arch: Architecture::Mixtral,
        num_kv_heads: c.num_key_value_heads.unwrap_or(c.common.num_attention_heads),
        norm_eps: c.rms_norm_eps,
        attention_bias: false,
        mlp_bias: false,
        use_parallel_residual: false,
        hidden_act: &c.hidden_act,
        moe: Some(MoeConfig {
            num_experts: c.num_local_experts,
            experts_per_token: c.num_experts_per_tok,
            router_aux_loss_coef: c.router_aux_loss_coef,
        }),
        sliding_window: c.sliding_window,
    };
    c.common.into_config(settings, rope, raw, path)
}

/// Mixtral's HF names and blocks.
pub(crate) struct Mixtral;

/// The router and the experts' parent under [`Mixtral::MLP`].
const ROUTER: &str = "gate";
const EXPERTS: &str = "experts";
/// gate (w1), up (w3), down (w2) of an expert.
const EXPERT_LINEARS: [&str; 3] = ["w1", "w3", "w2"];

impl HfArch for Mixtral {
    const EMBED: &'static str = Llama::EMBED;
    const LAYERS: &'static str = Llama::LAYERS;
    const ATTENTION: &'static str = Llama::ATTENTION;
    const MLP: &'static str = "block_sparse_moe";
    const FINAL_NORM: &'static str = Llama::FINAL_NORM;
    const HEAD: &'static str = Llama::HEAD;
    const BASE: &'static str = Llama::BASE;
    const HEAD_STORED_WHEN_TIED: bool = true;

    fn attention<B: Backend>(w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Attention<B>, ModelError> {
        Llama::attention(w, cfg)
    }

    fn save_attention<B: Backend>(a: &Attention<B>, out: HostTensorsAt<'_>, cfg: &ModelConfig) {
        Llama::save_attention(a, out, cfg)
    }

    fn mlp<B: Backend>(mut w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Mlp<B>, ModelError> {
        let moe = cfg.moe.expect("a Mixtral config has experts");
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let router = w.linear(ROUTER, h, moe.num_experts, false)?;
        let mut experts = Vec::with_capacity(moe.num_experts);
        for e in 0..moe.num_experts {
            let mut all = w.pp(EXPERTS);
            let mut ew = all.pp(e);
            let [gate, up, down] = EXPERT_LINEARS;
            experts.push(GatedMlp {
                gate_proj: ew.linear(gate, h, i, false)?,
                up_proj: ew.linear(up, h, i, false)?,
                down_proj: ew.linear(down, i, h, false)?,
            });
        }
        Ok(Mlp::Moe(MoeMlp { router, experts, experts_per_token: moe.experts_per_token }))
    }

    fn save_mlp<B: Backend>(m: &Mlp<B>, mut out: HostTensorsAt<'_>) {
        if let Mlp::Moe(m) = m {
            out.linear(ROUTER, &m.router);
            for (e, expert) in m.experts.iter().enumerate() {
                let mut all = out.pp(EXPERTS);
                let mut eo = all.pp(e);
                for (name, l) in EXPERT_LINEARS.iter().zip([&expert.gate_proj, &expert.up_proj, &expert.down_proj]) {
                    eo.linear(name, l);
                }
            }
        }
    }

    fn norm<B: Backend>(w: &mut WeightsAt<'_, B>, name: &str, cfg: &ModelConfig) -> Result<Norm<B>, ModelError> {
        Llama::norm(w, name, cfg)
    }
}
