//! GPT-NeoX / Pythia checkpoints (and CLEX-GPT-NeoX): fused `query_key_value` laid out per
//! head as [q|k|v], partial rotary, LayerNorm, GELU MLP, parallel or sequential residual,
//! untied `embed_out`, `gpt_neox.clex_layer.*`. The fused projection is split into q/k/v at
//! load and fused back at save, so both architectures share one attention. This file holds
//! the `config.json` mirror, the HF tensor names and the blocks GPT-NeoX builds its own way.

use std::path::Path;

use burn::tensor::backend::Backend;
use clex_core::RopeConfig;
use serde::Deserialize;
use serde_json::Value;

use super::{ArchSettings, HfArch, HfCommon, HostTensorsAt, WeightsAt, host_values};
use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::layers::{Mlp, Norm};

fn default_ln_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_gelu() -> String {
    "gelu".into()
}

/// GPT-NeoX `config.json` (the keys we read; rope keys are read by [`RopeConfig`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GptNeoxConfig {
    /// Keys shared with LLaMA.
    #[serde(flatten)]
    common: HfCommon,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` when true, sequential otherwise.
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    /// Biases on qkv and dense (transformers 5 key; always true before).
    #[serde(default = "default_true")]
    attention_bias: bool,
    /// MLP activation.
    #[serde(default = "default_gelu")]
    hidden_act: String,
}

/// The runtime config of a GPT-NeoX `config.json` (`raw`) with its parsed `rope`.
pub(crate) fn config(raw: Value, rope: RopeConfig, path: &Path) -> Result<ModelConfig, ModelError> {
    let c: GptNeoxConfig = super::parse_config(&raw, path)?;
    let settings = ArchSettings {
        arch: Architecture::GptNeox,
        num_kv_heads: c.common.num_attention_heads,
        norm_eps: c.layer_norm_eps,
        attention_bias: c.attention_bias,
        mlp_bias: true,
        use_parallel_residual: c.use_parallel_residual,
        hidden_act: &c.hidden_act,
        moe: None,
        sliding_window: None,
    };
    c.common.into_config(settings, rope, raw, path)
}

/// Rows of part `part` (0 = q, 1 = k, 2 = v) of a per-head-interleaved fused tensor whose
/// rows are `[head][part][head_dim]` and each row has `width` values.
pub(crate) fn take_part(fused: &[f32], heads: usize, head_dim: usize, width: usize, part: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * head_dim * width);
    for h in 0..heads {
        let start = ((h * 3 + part) * head_dim) * width;
        out.extend_from_slice(&fused[start..start + head_dim * width]);
    }
    out
}

/// Inverse of [`take_part`] over q, k, v.
fn fuse(parts: [&[f32]; 3], heads: usize, head_dim: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * heads * head_dim * width);
    for h in 0..heads {
        for p in parts {
            out.extend_from_slice(&p[h * head_dim * width..(h + 1) * head_dim * width]);
        }
    }
    out
}

/// GPT-NeoX's HF names and blocks.
pub(crate) struct GptNeox;

/// The fused q/k/v projection and the output projection under [`GptNeox::ATTENTION`].
const QKV: &str = "query_key_value";
const DENSE: &str = "dense";
/// In and out under [`GptNeox::MLP`].
const MLP_LINEARS: [&str; 2] = ["dense_h_to_4h", "dense_4h_to_h"];

impl HfArch for GptNeox {
    const EMBED: &'static str = "gpt_neox.embed_in";
    const LAYERS: &'static str = "gpt_neox.layers";
    const ATTENTION: &'static str = "attention";
    const MLP: &'static str = "mlp";
    const FINAL_NORM: &'static str = "gpt_neox.final_layer_norm";
    const HEAD: &'static str = "embed_out";
    const BASE: &'static str = "gpt_neox";
    const HEAD_STORED_WHEN_TIED: bool = false;

    fn attention<B: Backend>(mut w: WeightsAt<'_, B>, cfg: &ModelConfig) -> Result<Attention<B>, ModelError> {
        let (h, nh, hd, ab) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.attention_bias);
        let [q, k, v] = w.per_head_qkv(QKV, h, nh, hd, ab)?;
        let o = w.linear(DENSE, nh * hd, h, ab)?;
        Ok(super::attention([q, k, v, o], cfg))
    }

    fn save_attention<B: Backend>(a: &Attention<B>, mut out: HostTensorsAt<'_>, cfg: &ModelConfig) {
        let (h, nh, hd) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim);
        // HF layout ([out, in] weight, [out] bias) of q, k and v, fused back per head.
        let [q, k, v] = [&a.q_proj, &a.k_proj, &a.v_proj]
            .map(|l| (host_values(l.weight.val().transpose()), l.bias.as_ref().map(|b| host_values(b.val()))));
        let mut qkv = out.pp(QKV);
        qkv.tensor("weight", vec![3 * nh * hd, h], fuse([&q.0, &k.0, &v.0], nh, hd, h));
        if let (Some(qb), Some(kb), Some(vb)) = (&q.1, &k.1, &v.1) {
            qkv.tensor("bias", vec![3 * nh * hd], fuse([qb, kb, vb], nh, hd, 1));
        }
        out.linear(DENSE, &a.o_proj);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_fuse_are_inverse() {
        let (heads, hd, width) = (3, 2, 4);
        let fused: Vec<f32> = (0..3 * heads * hd * width).map(|x| x as f32).collect();
        let parts: Vec<Vec<f32>> = (0..3).map(|p| take_part(&fused, heads, hd, width, p)).collect();
        // Head 1's k rows start at row (1*3 + 1)*hd = 8.
        assert_eq!(parts[1][hd * width], (8 * width) as f32);
        assert_eq!(fuse([&parts[0], &parts[1], &parts[2]], heads, hd, width), fused);
    }
}
