//! The CLEX solve as ONE differentiable operation.
//!
//! Autodiff through thousands of RK4 stages would put ~60k nodes in burn's graph per
//! training step (and burn-autodiff's cleanup is super-linear in graph size). Instead the
//! solve is a single graph node whose backward runs the exact reverse of the same RK4
//! steps on the host ([`super::solver::backprop`]). This uses burn's backend-extension
//! pattern: [`ClexBackend`] has a plain default (no graph), and `Autodiff<B, C>` overrides
//! it to register the hand-written backward.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};

use super::theta::{OdeSpec, OdeWeights, ThetaTape};
use crate::attention::KeyMask;

/// Backends that can run the CLEX θ(t) solve, and what the model code needs to know about
/// them. Every backend gets the plain solve by an impl in `crate::backends`, which also sets
/// its capabilities; autodiff backends get the differentiable solve and their inner
/// backend's capabilities.
pub trait ClexBackend: Backend {
    /// Whether a vector-matrix product (a decode step's one query row against the cached
    /// keys) takes any length. cubecl 0.10's matmul autotune (wgpu, cuda) caches its pick per
    /// bucket of lengths, and its gemv kernels refuse lengths that are not a multiple of the
    /// GPU's plane size: a pick tuned at 48 cached keys panics at 41 ("Rhs dimension n=41
    /// must be a multiple of plane size"). Backends that say `false` get a second, copied
    /// query row in attention, which makes the products general matmuls.
    const GEMV_ANY_LENGTH: bool = true;

    /// Whether attention materialises a `[heads, seq, keys]` score matrix per layer (what
    /// memory estimates must count); burn-flex's kernel works in tiles.
    const ATTENTION_SCORES: bool = true;

    /// θ(t) = exp(z(t)), z(1) = ln(inv_freq), for integer `t >= 2`.
    ///
    /// # Shapes
    /// - `inv_freq`: `[K]`, `up`: `[K, H]`, `down`: `[H, K]`
    /// - returns `[K]` (f32)
    fn clex_theta(
        inv_freq: FloatTensor<Self>,
        up: FloatTensor<Self>,
        down: FloatTensor<Self>,
        spec: OdeSpec,
        t: usize,
    ) -> FloatTensor<Self> {
        let device = Self::float_device(&inv_freq);
        let weights = OdeWeights { inv_freq: host::<Self, 1>(inv_freq).0, up: host::<Self, 2>(up).0, down: host::<Self, 2>(down).0 };
        let theta = weights.theta(&spec, t);
        device_vec::<Self>(theta, &device, DType::F32)
    }

    /// Attention over sequence-major tensors with grouped KV heads ([`crate::attention::attention`]):
    /// burn's fused op by default.
    ///
    /// # Shapes
    /// - `q`: `[batch, seq, heads, d]`; `k`, `v`: `[batch, n, kv_heads, d]` → `[batch, seq, heads, d]`
    fn grouped_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: &KeyMask) -> FloatTensor<Self> {
        crate::attention::default_attention::<Self>(q, k, v, mask)
    }

    /// Writes `new` into `cache` at sequence position `at` ([`crate::attention::kv_write`]):
    /// burn's `slice_assign` by default.
    ///
    /// # Shapes
    /// - `cache`: `[batch, capacity, kv_heads, d]`; `new`: `[batch, seq, kv_heads, d]`
    fn kv_write(cache: FloatTensor<Self>, new: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        crate::attention::default_kv_write::<Self>(cache, new, at)
    }
}

/// Host copy of a float tensor, with its dtype.
pub(crate) fn host<B: Backend, const D: usize>(p: FloatTensor<B>) -> (Vec<f32>, DType) {
    let t = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(p));
    let dtype = t.dtype();
    let data = t.into_data().convert::<f32>();
    (data.to_vec::<f32>().expect("converted to f32 just above"), dtype)
}

/// A rank-1 device tensor from host values.
fn device_vec<B: Backend>(v: Vec<f32>, device: &B::Device, dtype: DType) -> FloatTensor<B> {
    let n = v.len();
    Tensor::<B, 1>::from_data(TensorData::new(v, [n]), (device, dtype)).into_primitive().tensor()
}

/// What the backward needs: the tape plus the parents' shapes and dtypes.
#[derive(Debug)]
struct SolveState {
    tape: ThetaTape,
    k: usize,
    hidden: usize,
    dtypes: [DType; 3],
}

#[derive(Debug)]
struct ClexThetaBackward;

impl<B: Backend> Backward<B, 3> for ClexThetaBackward {
    type State = Arc<SolveState>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let device = B::float_device(&g);
        let (g, _) = host::<B, 1>(g);
        let st = &ops.state;
        let out = st.tape.backward(&g);
        let [p_inv, p_up, p_down] = ops.parents;
        let (k, h) = (st.k, st.hidden);
        if let Some(node) = p_inv {
            grads.register::<B>(node.id, device_vec::<B>(out.inv_freq, &device, st.dtypes[0]));
        }
        if let Some(node) = p_up {
            let t = device_vec::<B>(out.up, &device, st.dtypes[1]);
            grads.register::<B>(node.id, reshape2::<B>(t, [k, h]));
        }
        if let Some(node) = p_down {
            let t = device_vec::<B>(out.down, &device, st.dtypes[2]);
            grads.register::<B>(node.id, reshape2::<B>(t, [h, k]));
        }
    }
}

fn reshape2<B: Backend>(p: FloatTensor<B>, shape: [usize; 2]) -> FloatTensor<B> {
    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(p)).reshape(shape).into_primitive().tensor()
}

impl<B: ClexBackend, C: CheckpointStrategy> ClexBackend for Autodiff<B, C> {
    const GEMV_ANY_LENGTH: bool = B::GEMV_ANY_LENGTH;

    /// The explicit path: burn decomposes its fused op under autodiff anyway, and this one
    /// keeps the softmax in f32 for half-precision training.
    fn grouped_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: &KeyMask) -> FloatTensor<Self> {
        let t = |p| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(p));
        crate::attention::explicit(t(q), t(k), t(v), mask).into_primitive().tensor()
    }

    fn clex_theta(
        inv_freq: FloatTensor<Self>,
        up: FloatTensor<Self>,
        down: FloatTensor<Self>,
        spec: OdeSpec,
        t: usize,
    ) -> FloatTensor<Self> {
        let device = B::float_device(&inv_freq.primitive);
        let (inv_h, d0) = host::<B, 1>(inv_freq.primitive.clone());
        let (up_h, d1) = host::<B, 2>(up.primitive.clone());
        let (down_h, d2) = host::<B, 2>(down.primitive.clone());
        let k = inv_h.len();
        let hidden = up_h.len() / k.max(1);
        let weights = OdeWeights { inv_freq: inv_h, up: up_h, down: down_h };
        let prep = ClexThetaBackward.prepare::<C>([inv_freq.node.clone(), up.node.clone(), down.node.clone()]).compute_bound().stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let tape = weights.theta_taped(&spec, t);
                let out = device_vec::<B>(tape.theta.clone(), &device, DType::F32);
                prep.finish(Arc::new(SolveState { tape, k, hidden, dtypes: [d0, d1, d2] }), out)
            }
            OpsKind::UnTracked(prep) => {
                let out = device_vec::<B>(weights.theta(&spec, t), &device, DType::F32);
                prep.finish(out)
            }
        }
    }
}
