//! Fresh models for training: random weights for a config (from scratch), and a fresh CLEX
//! layer on an existing model (continual pretraining of a non-CLEX checkpoint).

use burn::module::Param;
use burn::nn::{Embedding, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use clex_core::{ClexLayerConfig, ClexParams, RopeScaling};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::attention::Attention;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::layers::{Block, GatedMlp, Mlp, Norm, PlainMlp};
use crate::model::CausalLm;

/// HF's default `initializer_range`.
const INIT_STD: f64 = 0.02;

/// Host-side RNG: weights depend only on the seed, not on the backend's global RNG (which
/// concurrent runs in one process would share).
struct Init<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
}

impl<B: Backend> Init<'_, B> {
    fn normal<const D: usize>(&mut self, shape: [usize; D]) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        // Box-Muller on the seeded stream.
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2): (f64, f64) = (self.rng.random::<f64>().max(f64::MIN_POSITIVE), self.rng.random::<f64>());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * INIT_STD) as f32
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f64) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| ((self.rng.random::<f64>() * 2.0 - 1.0) * bound) as f32).collect();
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.normal([d_in, d_out])),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], self.device))),
        }
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
/// The weights are a function of `seed` alone.
pub fn init_model<B: Backend>(cfg: ModelConfig, device: &B::Device, seed: u64) -> CausalLm<B> {
    let mut init = Init::<B> { rng: ChaCha8Rng::seed_from_u64(seed), device };
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let layers = (0..cfg.num_layers)
        .map(|_| {
            let init = &mut init;
            let ab = cfg.attention_bias;
            let attention = Attention {
                q_proj: init.linear(h, q_out, ab),
                k_proj: init.linear(h, kv_out, ab),
                v_proj: init.linear(h, kv_out, ab),
                o_proj: init.linear(q_out, h, ab),
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
            };
            let mlp = match cfg.arch {
                Architecture::Llama => Mlp::Gated(GatedMlp {
                    gate_proj: init.linear(h, i, cfg.mlp_bias),
                    up_proj: init.linear(h, i, cfg.mlp_bias),
                    down_proj: init.linear(i, h, cfg.mlp_bias),
                }),
                Architecture::GptNeox => {
                    Mlp::Plain(PlainMlp { dense_h_to_4h: init.linear(h, i, true), dense_4h_to_h: init.linear(i, h, true) })
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
    let embed = Embedding { weight: Param::from_tensor(init.normal([v, h])) };
    let lm_head = (!cfg.tie_word_embeddings).then(|| init.linear(h, v, false));
    // CLEX: inv_freq = 1/B^(2i/d), U ~ U(±1/sqrt(H)), D = 0 (as ClexLayerConfig::init).
    let clex = ClexLayerConfig::from_rope(&cfg.rope).map(|c| {
        let (k, hid) = (c.dim / 2, c.param_factor * c.dim);
        let inv = clex_core::rope::base_inv_freq(c.rope_theta, c.dim);
        let up = init.uniform([k, hid], 1.0 / (hid as f64).sqrt());
        c.init_with(Tensor::from_data(TensorData::new(inv, [k]), device), up, Tensor::zeros([hid, k], device))
            .expect("shapes follow the config")
    });
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
