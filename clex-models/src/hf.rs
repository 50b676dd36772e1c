//! Helpers shared by the architecture files: building burn layers from checkpoint tensors
//! and turning them back into HF-layout host tensors for saving.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear, RmsNorm};
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use clex_core::{ClexLayer, ClexLayerConfig};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::weights::Checkpoint;

/// An HF `nn.Linear` weight `[out, in]` as burn's `[in, out]`, materialised rather than a
/// transposed view: a strided weight would be copied to contiguous memory by every matmul
/// (most of a CPU decode step).
pub(crate) fn in_out_weight<B: Backend>(w_out_in: Tensor<B, 2>, device: &B::Device, dtype: DType) -> Tensor<B, 2> {
    Tensor::from_data(w_out_in.transpose().into_data(), (device, dtype))
}

/// A host tensor in HF layout, ready to be written.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// HF name.
    pub name: String,
    /// HF shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
    /// Kept in f32 whatever the model dtype (CLEX parameters).
    pub force_f32: bool,
}

pub(crate) fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("converted to f32")
}

pub(crate) fn host(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> HostTensor {
    HostTensor { name: name.into(), shape, values, force_f32: false }
}

/// HF `[out, in]` weight and `[out]` bias of a burn `Linear` (`[in, out]`).
pub(crate) fn linear_out<B: Backend>(prefix: &str, l: &Linear<B>) -> Vec<HostTensor> {
    let w = l.weight.val();
    let [d_in, d_out] = w.dims();
    let mut v = vec![host(format!("{prefix}.weight"), vec![d_out, d_in], host_values(w.transpose()))];
    if let Some(b) = &l.bias {
        v.push(host(format!("{prefix}.bias"), vec![d_out], host_values(b.val())));
    }
    v
}

pub(crate) fn embedding<B: Backend>(
    ck: &Checkpoint,
    name: &str,
    vocab: usize,
    hidden: usize,
    device: &B::Device,
    dtype: DType,
) -> Result<Embedding<B>, ModelError> {
    Ok(Embedding { weight: Param::from_tensor(ck.tensor(name, [vocab, hidden], device, dtype)?) })
}

pub(crate) fn rms_norm<B: Backend>(
    ck: &Checkpoint,
    name: &str,
    hidden: usize,
    eps: f64,
    device: &B::Device,
    dtype: DType,
) -> Result<RmsNorm<B>, ModelError> {
    Ok(RmsNorm { gamma: Param::from_tensor(ck.tensor(name, [hidden], device, dtype)?), epsilon: eps })
}

pub(crate) fn layer_norm<B: Backend>(
    ck: &Checkpoint,
    prefix: &str,
    hidden: usize,
    eps: f64,
    device: &B::Device,
    dtype: DType,
) -> Result<LayerNorm<B>, ModelError> {
    let mut ln = LayerNormConfig::new(hidden).with_epsilon(eps).init(device);
    ln.gamma = Param::from_tensor(ck.tensor(&format!("{prefix}.weight"), [hidden], device, dtype)?);
    ln.beta = Some(Param::from_tensor(ck.tensor(&format!("{prefix}.bias"), [hidden], device, dtype)?));
    Ok(ln)
}

/// The CLEX layer under `{prefix}.clex_layer.*`, kept in f32 (the ODE runs in f32)
/// with `inv_freq` exactly as stored (docs/CLEX.md §3.5).
pub(crate) fn clex_layer<B: Backend>(
    ck: &Checkpoint,
    prefix: &str,
    cfg: &ModelConfig,
    device: &B::Device,
) -> Result<Option<ClexLayer<B>>, ModelError> {
    let Some(lc) = ClexLayerConfig::from_rope(&cfg.rope) else { return Ok(None) };
    let (k, h) = (lc.dim / 2, lc.param_factor * lc.dim);
    let f32 = DType::F32;
    let inv = ck.tensor(&format!("{prefix}.clex_layer.inv_freq"), [k], device, f32)?;
    let up = ck.tensor(&format!("{prefix}.clex_layer.proj_func.ode_up_proj"), [k, h], device, f32)?;
    let down = ck.tensor(&format!("{prefix}.clex_layer.proj_func.ode_down_proj"), [h, k], device, f32)?;
    Ok(Some(lc.init_with(inv, up, down)?))
}

pub(crate) fn clex_out<B: Backend>(prefix: &str, clex: &ClexLayer<B>) -> Vec<HostTensor> {
    let w = clex.weights();
    let (k, h) = (w.inv_freq.len(), w.up.len() / w.inv_freq.len());
    let f = |name: &str, shape: Vec<usize>, values: Vec<f32>| HostTensor {
        name: format!("{prefix}.clex_layer.{name}"),
        shape,
        values,
        force_f32: true,
    };
    vec![f("inv_freq", vec![k], w.inv_freq), f("proj_func.ode_up_proj", vec![k, h], w.up), f("proj_func.ode_down_proj", vec![h, k], w.down)]
}

/// A tensor from host values in `dtype`.
pub(crate) fn tensor<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], device: &B::Device, dtype: DType) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}
