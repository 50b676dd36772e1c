//! LLaMA-family checkpoints (LLaMA 1-3, Mistral without sliding window, CLEX-LLaMA):
//! RMSNorm, SwiGLU, GQA, optional biases, tied or untied head, `model.clex_layer.*`.
//! This file knows the HF tensor names and shapes; the forward is [`crate::CausalLm`]'s.

use burn::tensor::{DType, backend::Backend};

use crate::attention::Attention;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::hf::{self, HostTensor, host, host_values, linear_out};
use crate::layers::{Block, GatedMlp, Mlp, Norm};
use crate::model::CausalLm;
use crate::weights::Checkpoint;

/// Builds a LLaMA model from checkpoint tensors.
pub(crate) fn load<B: Backend>(cfg: ModelConfig, ck: &Checkpoint, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let embed = hf::embedding(ck, "model.embed_tokens.weight", v, h, device, dtype)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        let ab = cfg.attention_bias;
        let attention = Attention {
            q_proj: ck.linear(&format!("{p}.self_attn.q_proj"), h, q_out, ab, device, dtype)?,
            k_proj: ck.linear(&format!("{p}.self_attn.k_proj"), h, kv_out, ab, device, dtype)?,
            v_proj: ck.linear(&format!("{p}.self_attn.v_proj"), h, kv_out, ab, device, dtype)?,
            o_proj: ck.linear(&format!("{p}.self_attn.o_proj"), q_out, h, ab, device, dtype)?,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        let mb = cfg.mlp_bias;
        let mlp = Mlp::Gated(GatedMlp {
            gate_proj: ck.linear(&format!("{p}.mlp.gate_proj"), h, i, mb, device, dtype)?,
            up_proj: ck.linear(&format!("{p}.mlp.up_proj"), h, i, mb, device, dtype)?,
            down_proj: ck.linear(&format!("{p}.mlp.down_proj"), i, h, mb, device, dtype)?,
        });
        layers.push(Block {
            input_norm: Norm::Rms(hf::rms_norm(ck, &format!("{p}.input_layernorm.weight"), h, cfg.norm_eps, device, dtype)?),
            post_norm: Norm::Rms(hf::rms_norm(ck, &format!("{p}.post_attention_layernorm.weight"), h, cfg.norm_eps, device, dtype)?),
            attention,
            mlp,
            parallel_residual: false,
        });
    }
    let final_norm = Norm::Rms(hf::rms_norm(ck, "model.norm.weight", h, cfg.norm_eps, device, dtype)?);
    let lm_head = if cfg.tie_word_embeddings {
        if ck.contains("lm_head.weight") {
            // Some tied checkpoints store the head anyway; it must be the embedding.
            ck.f32_values("lm_head.weight", &[v, h])?;
        }
        None
    } else {
        Some(ck.linear("lm_head", h, v, false, device, dtype)?)
    };
    let clex = hf::clex_layer(ck, "model", &cfg, device)?;
    Ok(CausalLm::from_parts(cfg, embed, layers, final_norm, lm_head, clex))
}

/// The model's tensors under their HF names and layouts.
pub(crate) fn tensors<B: Backend>(m: &CausalLm<B>) -> Vec<HostTensor> {
    let mut out = Vec::new();
    let w = m.embed.weight.val();
    let shape = w.dims().to_vec();
    out.push(host("model.embed_tokens.weight", shape, host_values(w)));
    for (l, block) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        let a = &block.attention;
        out.extend(linear_out(&format!("{p}.self_attn.q_proj"), &a.q_proj));
        out.extend(linear_out(&format!("{p}.self_attn.k_proj"), &a.k_proj));
        out.extend(linear_out(&format!("{p}.self_attn.v_proj"), &a.v_proj));
        out.extend(linear_out(&format!("{p}.self_attn.o_proj"), &a.o_proj));
        if let Mlp::Gated(mlp) = &block.mlp {
            out.extend(linear_out(&format!("{p}.mlp.gate_proj"), &mlp.gate_proj));
            out.extend(linear_out(&format!("{p}.mlp.up_proj"), &mlp.up_proj));
            out.extend(linear_out(&format!("{p}.mlp.down_proj"), &mlp.down_proj));
        }
        out.extend(norm_out(&format!("{p}.input_layernorm"), &block.input_norm));
        out.extend(norm_out(&format!("{p}.post_attention_layernorm"), &block.post_norm));
    }
    out.extend(norm_out("model.norm", &m.final_norm));
    if let Some(head) = &m.lm_head {
        out.extend(linear_out("lm_head", head));
    }
    if let Some(clex) = &m.clex_layer {
        out.extend(hf::clex_out("model", clex));
    }
    out
}

pub(crate) fn norm_out<B: Backend>(prefix: &str, n: &Norm<B>) -> Vec<HostTensor> {
    match n {
        Norm::Rms(n) => {
            let g = n.gamma.val();
            vec![host(format!("{prefix}.weight"), g.dims().to_vec(), host_values(g))]
        }
        Norm::Layer(n) => {
            let g = n.gamma.val();
            let mut v = vec![host(format!("{prefix}.weight"), g.dims().to_vec(), host_values(g))];
            if let Some(b) = &n.beta {
                let b = b.val();
                v.push(host(format!("{prefix}.bias"), b.dims().to_vec(), host_values(b)));
            }
            v
        }
    }
}
