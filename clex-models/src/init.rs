//! Fresh models for training: random weights for a config (from scratch), and a fresh CLEX
//! layer on an existing model (continual pretraining of a non-CLEX checkpoint).

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use clex_core::{ClexLayer, ClexLayerConfig, ClexParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arch::{self, WeightSource};
use crate::config::{ModelConfig, RopeChange};
use crate::error::ModelError;
use crate::model::CausalLm;

/// HF's default `initializer_range`.
const INIT_STD: f64 = 0.02;

/// Seeded random weights, the [`WeightSource`] of [`init_model`]. A host-side RNG: weights
/// depend only on the seed, not on the backend's global RNG (which concurrent runs in one
/// process would share). Tensors are made in the device's default float dtype.
struct RandomWeights<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
}

impl<B: Backend> RandomWeights<'_, B> {
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
}

/// N(0, 0.02) matrices and embeddings, unit norms, zero biases, a fresh CLEX layer; names
/// are not needed.
impl<B: Backend> WeightSource<B> for RandomWeights<'_, B> {
    fn linear(&mut self, _name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, ModelError> {
        Ok(Linear {
            weight: Param::from_tensor(self.normal([d_in, d_out])),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], self.device))),
        })
    }

    fn per_head_qkv(&mut self, name: &str, d_in: usize, heads: usize, head_dim: usize, bias: bool) -> Result<[Linear<B>; 3], ModelError> {
        let d_out = heads * head_dim;
        Ok([self.linear(name, d_in, d_out, bias)?, self.linear(name, d_in, d_out, bias)?, self.linear(name, d_in, d_out, bias)?])
    }

    fn embedding(&mut self, _name: &str, vocab: usize, hidden: usize) -> Result<Embedding<B>, ModelError> {
        Ok(Embedding { weight: Param::from_tensor(self.normal([vocab, hidden])) })
    }

    fn rms_norm(&mut self, _name: &str, hidden: usize, eps: f64) -> Result<RmsNorm<B>, ModelError> {
        Ok(RmsNorm { gamma: Param::from_tensor(Tensor::ones([hidden], self.device)), epsilon: eps })
    }

    fn layer_norm(&mut self, _name: &str, hidden: usize, eps: f64) -> Result<LayerNorm<B>, ModelError> {
        Ok(LayerNormConfig::new(hidden).with_epsilon(eps).init(self.device))
    }

    /// ClexLayerConfig's one init formula, with U drawn from this seeded generator.
    fn clex_layer(&mut self, _name: &str, config: &ClexLayerConfig) -> Result<ClexLayer<B>, ModelError> {
        let device = self.device;
        Ok(config.init_sampled(device, |shape, bound| self.uniform(shape, bound)))
    }

    fn tied_copy(&mut self, _name: &str, _vocab: usize, _hidden: usize) -> Result<(), ModelError> {
        Ok(())
    }
}

/// A model with fresh weights: N(0, 0.02) matrices and embeddings, unit norms, zero biases,
/// and for CLEX configs a fresh CLEX layer (D = 0: the trajectory starts as NTK scaling).
/// The weights are a function of `seed` alone.
pub fn init_model<B: Backend>(cfg: ModelConfig, device: &B::Device, seed: u64) -> CausalLm<B> {
    let mut random = RandomWeights::<B> { rng: ChaCha8Rng::seed_from_u64(seed), device };
    arch::build(cfg, &mut random).expect("random weights have the shapes they are asked for")
}

/// Turns a non-CLEX model into a CLEX one with a fresh layer (D = 0, so at step 0 θ(t) is
/// NTK scaling with α = 2t − 1 from the model's own base). The config's rope becomes the CLEX
/// one through [`ModelConfig::with_rope`].
pub fn attach_fresh_clex<B: Backend>(model: CausalLm<B>, params: ClexParams) -> Result<CausalLm<B>, ModelError> {
    if model.clex_layer.is_some() {
        return Err(ModelError::Invalid("the model already has a CLEX layer".into()));
    }
    let config = model.config().with_rope(&RopeChange::Clex(params), None)?;
    Ok(with_fresh_clex(model, config))
}

/// `model`'s weights under `config` (a CLEX config of the same shapes) with a fresh CLEX layer.
pub(crate) fn with_fresh_clex<B: Backend>(model: CausalLm<B>, config: ModelConfig) -> CausalLm<B> {
    let device = model.embed.weight.val().device();
    let layer = ClexLayerConfig::from_rope(&config.rope).expect("a CLEX config").init(&device);
    let CausalLm { embed, layers, final_norm, lm_head, .. } = model;
    CausalLm::from_parts(config, embed, layers, final_norm, lm_head, Some(layer))
}
