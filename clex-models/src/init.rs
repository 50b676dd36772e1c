//! Fresh models for training: random weights for a config (from scratch), and a fresh CLEX
//! layer on an existing model (continual pretraining of a non-CLEX checkpoint).

use burn::module::Param;
use burn::nn::{Embedding, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use clex_core::{ClexLayerConfig, ClexParams, RopeScaling};
use serde_json::json;

use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::layers::{Block, GatedMlp, Mlp, Norm, PlainMlp};
use crate::model::CausalLm;

/// HF's default `initializer_range`.
const INIT_STD: f64 = 0.02;

fn normal<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, INIT_STD), device)
}

fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(normal([d_in, d_out], device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

fn norm<B: Backend>(cfg: &ModelConfig, device: &B::Device) -> Norm<B> {
    let h = cfg.hidden_size;
    match cfg.arch {
        Architecture::Llama => Norm::Rms(RmsNorm { gamma: Param::from_tensor(Tensor::ones([h], device)), epsilon: cfg.norm_eps }),
        Architecture::GptNeox => Norm::Layer(LayerNormConfig::new(h).with_epsilon(cfg.norm_eps).init(device)),
    }
}

/// A model with fresh weights: N(0, 0.02) matrices and embeddings, unit norms, zero biases,
/// and for CLEX configs a fresh CLEX layer (D = 0: the trajectory starts as NTK scaling).
/// Seed the backend first (`B::seed`) for reproducible weights.
pub fn init_model<B: Backend>(cfg: ModelConfig, device: &B::Device) -> CausalLm<B> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let layers = (0..cfg.num_layers)
        .map(|_| {
            let ab = cfg.attention_bias;
            let attention = Attention {
                q_proj: linear(h, q_out, ab, device),
                k_proj: linear(h, kv_out, ab, device),
                v_proj: linear(h, kv_out, ab, device),
                o_proj: linear(q_out, h, ab, device),
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
            };
            let mlp = match cfg.arch {
                Architecture::Llama => Mlp::Gated(GatedMlp {
                    gate_proj: linear(h, i, cfg.mlp_bias, device),
                    up_proj: linear(h, i, cfg.mlp_bias, device),
                    down_proj: linear(i, h, cfg.mlp_bias, device),
                }),
                Architecture::GptNeox => {
                    Mlp::Plain(PlainMlp { dense_h_to_4h: linear(h, i, true, device), dense_4h_to_h: linear(i, h, true, device) })
                }
            };
            Block {
                input_norm: norm(&cfg, device),
                post_norm: norm(&cfg, device),
                attention,
                mlp,
                parallel_residual: cfg.use_parallel_residual,
            }
        })
        .collect();
    let embed = Embedding { weight: Param::from_tensor(normal([v, h], device)) };
    let lm_head = (!cfg.tie_word_embeddings).then(|| linear(h, v, false, device));
    let clex = ClexLayerConfig::from_rope(&cfg.rope).map(|c| c.init(device));
    let final_norm = norm(&cfg, device);
    CausalLm::from_parts(cfg, embed, layers, final_norm, lm_head, clex)
}

/// Turns a non-CLEX model into a CLEX one with a fresh layer (D = 0, so at step 0 θ(t) is
/// NTK scaling with α = 2t − 1 from the model's own base). The config's rope block becomes
/// the CLEX block (HF `rope_scaling` spelling, as the released checkpoints write it).
pub fn attach_fresh_clex<B: Backend>(model: CausalLm<B>, params: ClexParams) -> Result<CausalLm<B>, ModelError> {
    if model.clex_layer.is_some() {
        return Err(ModelError::Invalid("the model already has a CLEX layer".into()));
    }
    let device = model.embed.weight.val().device();
    let mut cfg = model.config().clone();
    let mut raw = cfg.raw.clone();
    if let Some(obj) = raw.as_object_mut() {
        obj.remove("rope_parameters");
        obj.insert("rope_theta".into(), json!(cfg.rope.theta));
        obj.insert(
            "rope_scaling".into(),
            json!({"type": "clex", "max_factor": params.max_factor, "param_factor": params.param_factor,
                   "act": params.act.as_str(), "time_dt": params.time_dt, "factor": 1}),
        );
        if cfg.rope.rotary_dim != cfg.rope.head_dim {
            obj.insert("partial_rotary_factor".into(), json!(cfg.rope.rotary_dim as f64 / cfg.rope.head_dim as f64));
        }
    }
    let rope = clex_core::RopeConfig { scaling: RopeScaling::Clex(params), ..cfg.rope.clone() };
    cfg.rope = rope;
    cfg.raw = raw;
    let layer = ClexLayerConfig::from_rope(&cfg.rope).expect("just set to clex").init(&device);
    let CausalLm { embed, layers, final_norm, lm_head, .. } = model;
    Ok(CausalLm::from_parts(cfg, embed, layers, final_norm, lm_head, Some(layer)))
}
