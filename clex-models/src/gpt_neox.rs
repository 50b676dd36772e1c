//! GPT-NeoX / Pythia checkpoints (and CLEX-GPT-NeoX): fused `query_key_value` laid out per
//! head as [q|k|v], partial rotary, LayerNorm, GELU MLP, parallel or sequential residual,
//! untied `embed_out`, `gpt_neox.clex_layer.*`. The fused projection is split into q/k/v at
//! load and fused back at save, so both architectures share one attention.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{DType, backend::Backend};

use crate::attention::Attention;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::hf::{self, HostTensor, host, host_values, linear_out};
use crate::layers::{Block, Mlp, Norm, PlainMlp};
use crate::llama::norm_out;
use crate::model::CausalLm;
use crate::weights::Checkpoint;

/// Rows of part `part` (0 = q, 1 = k, 2 = v) of a per-head-interleaved fused tensor whose
/// rows are `[head][part][head_dim]` and each row has `width` values.
fn take_part(fused: &[f32], heads: usize, head_dim: usize, width: usize, part: usize) -> Vec<f32> {
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

fn linear_from_hf<B: Backend>(
    w_out_in: Vec<f32>,
    bias: Option<Vec<f32>>,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
    dtype: DType,
) -> Linear<B> {
    let w = hf::in_out_weight(hf::tensor::<B, 2>(w_out_in, [d_out, d_in], device, dtype), device, dtype);
    Linear { weight: Param::from_tensor(w), bias: bias.map(|b| Param::from_tensor(hf::tensor::<B, 1>(b, [d_out], device, dtype))) }
}

/// Builds a GPT-NeoX model from checkpoint tensors.
pub(crate) fn load<B: Backend>(cfg: ModelConfig, ck: &Checkpoint, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let (h, i, v, nh, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_heads, cfg.head_dim);
    let embed = hf::embedding(ck, "gpt_neox.embed_in.weight", v, h, device, dtype)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for l in 0..cfg.num_layers {
        let p = format!("gpt_neox.layers.{l}");
        let qkv_w = ck.f32_values(&format!("{p}.attention.query_key_value.weight"), &[3 * nh * hd, h])?;
        let qkv_b =
            if cfg.attention_bias { Some(ck.f32_values(&format!("{p}.attention.query_key_value.bias"), &[3 * nh * hd])?) } else { None };
        let proj = |part| {
            let w = take_part(&qkv_w, nh, hd, h, part);
            let b = qkv_b.as_ref().map(|b| take_part(b, nh, hd, 1, part));
            linear_from_hf::<B>(w, b, h, nh * hd, device, dtype)
        };
        let attention = Attention {
            q_proj: proj(0),
            k_proj: proj(1),
            v_proj: proj(2),
            o_proj: ck.linear(&format!("{p}.attention.dense"), nh * hd, h, cfg.attention_bias, device, dtype)?,
            num_heads: nh,
            num_kv_heads: nh,
            head_dim: hd,
        };
        let mlp = Mlp::Plain(PlainMlp {
            dense_h_to_4h: ck.linear(&format!("{p}.mlp.dense_h_to_4h"), h, i, true, device, dtype)?,
            dense_4h_to_h: ck.linear(&format!("{p}.mlp.dense_4h_to_h"), i, h, true, device, dtype)?,
        });
        layers.push(Block {
            input_norm: Norm::Layer(hf::layer_norm(ck, &format!("{p}.input_layernorm"), h, cfg.norm_eps, device, dtype)?),
            post_norm: Norm::Layer(hf::layer_norm(ck, &format!("{p}.post_attention_layernorm"), h, cfg.norm_eps, device, dtype)?),
            attention,
            mlp,
            parallel_residual: cfg.use_parallel_residual,
        });
    }
    let final_norm = Norm::Layer(hf::layer_norm(ck, "gpt_neox.final_layer_norm", h, cfg.norm_eps, device, dtype)?);
    let lm_head = if cfg.tie_word_embeddings { None } else { Some(ck.linear("embed_out", h, v, false, device, dtype)?) };
    let clex = hf::clex_layer(ck, "gpt_neox", &cfg, device)?;
    Ok(CausalLm::from_parts(cfg, embed, layers, final_norm, lm_head, clex))
}

/// The model's tensors under their HF names and layouts (q/k/v fused back).
pub(crate) fn tensors<B: Backend>(m: &CausalLm<B>) -> Vec<HostTensor> {
    let cfg = m.config();
    let (h, nh, hd) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim);
    let mut out = Vec::new();
    let w = m.embed.weight.val();
    out.push(host("gpt_neox.embed_in.weight", w.dims().to_vec(), host_values(w)));
    for (l, block) in m.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{l}");
        let a = &block.attention;
        let parts: Vec<Vec<HostTensor>> = [&a.q_proj, &a.k_proj, &a.v_proj].iter().map(|lin| linear_out("x", lin)).collect();
        let w = fuse([&parts[0][0].values, &parts[1][0].values, &parts[2][0].values], nh, hd, h);
        out.push(host(format!("{p}.attention.query_key_value.weight"), vec![3 * nh * hd, h], w));
        if parts[0].len() > 1 {
            let b = fuse([&parts[0][1].values, &parts[1][1].values, &parts[2][1].values], nh, hd, 1);
            out.push(host(format!("{p}.attention.query_key_value.bias"), vec![3 * nh * hd], b));
        }
        out.extend(linear_out(&format!("{p}.attention.dense"), &a.o_proj));
        if let Mlp::Plain(mlp) = &block.mlp {
            out.extend(linear_out(&format!("{p}.mlp.dense_h_to_4h"), &mlp.dense_h_to_4h));
            out.extend(linear_out(&format!("{p}.mlp.dense_4h_to_h"), &mlp.dense_4h_to_h));
        }
        out.extend(norm_out(&format!("{p}.input_layernorm"), &block.input_norm));
        out.extend(norm_out(&format!("{p}.post_attention_layernorm"), &block.post_norm));
    }
    out.extend(norm_out("gpt_neox.final_layer_norm", &m.final_norm));
    if let Some(head) = &m.lm_head {
        out.extend(linear_out("embed_out", head));
    }
    if let Some(clex) = &m.clex_layer {
        out.extend(hf::clex_out("gpt_neox", clex));
    }
    out
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
