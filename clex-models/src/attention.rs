//! Multi-head attention with GQA, rotary (full or partial), optional CLEX query log-scaling
//! and the CLEX-aware KV cache. The one attention implementation of both architectures.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, FloatDType, Tensor, backend::Backend};
use clex_core::ClexBackend;
use clex_core::rope::apply_rotary_seq_major;

use crate::cache::{LayerKv, Plan};

/// Rotary inputs of one forward, shared by every layer.
#[derive(Debug, Clone)]
pub struct RotaryBatch<B: Backend> {
    /// cos for the new tokens, `[batch or 1, seq, rot]`.
    pub cos: Tensor<B, 3>,
    /// sin for the new tokens, `[batch or 1, seq, rot]`.
    pub sin: Tensor<B, 3>,
    /// Multiplies queries (CLEX log scaling λ(N)).
    pub query_scale: Option<f32>,
}

/// q/k/v/o projections (`[in, out]` burn layout) and head geometry.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub o_proj: Linear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
}

impl<B: ClexBackend> Attention<B> {
    /// `[b, s, heads·d]` → `[b, s, heads, d]`: the projection's own layout, no copy.
    fn split_heads(&self, x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, heads, self.head_dim])
    }

    /// `[b, n, kv_heads, d]` → `[b, n, heads, d]`: each KV head serves heads/kv_heads queries
    /// (head h reads KV head h / rep, as HF's `repeat_kv`). Repeating a size-1 dim copies
    /// whole rows, where reshaping an expanded view would copy element by element.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let rep = self.num_heads / self.num_kv_heads;
        if rep == 1 {
            return x;
        }
        let [b, n, kvh, d] = x.dims();
        x.unsqueeze_dim::<5>(3).repeat_dim(3, rep).reshape([b, n, kvh * rep, d])
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `mask`: `[batch or 1, 1, seq, total]`, true where attention is not allowed
    /// - `kv`: this layer's cache and the forward's [`Plan`] for it
    /// - returns `[batch, seq, hidden]`
    ///
    /// Queries, keys, values and the cache stay sequence-major (`[batch, seq, heads, d]`,
    /// the projections' layout): rotation and cache appends then work on contiguous
    /// tensors, and the attention products read head-major views of them without a copy.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rot: &RotaryBatch<B>,
        kv: Option<(&mut LayerKv<B>, &Plan<B>)>,
        mask: &Tensor<B, 4, Bool>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let q = self.split_heads(self.q_proj.forward(x.clone()), self.num_heads);
        let k = self.split_heads(self.k_proj.forward(x.clone()), self.num_kv_heads);
        let v = self.split_heads(self.v_proj.forward(x), self.num_kv_heads);

        let mut q = apply_rotary_seq_major(q, rot.cos.clone(), rot.sin.clone());
        if let Some(scale) = rot.query_scale {
            q = q.mul_scalar(scale);
        }
        let (k_all, v_all) = match kv {
            None => (apply_rotary_seq_major(k, rot.cos.clone(), rot.sin.clone()), v),
            Some((kv, plan)) => kv.append(k, v, &rot.cos, &rot.sin, plan),
        };
        // Head-major views [b, heads, n, d] for the products.
        let q = q.swap_dims(1, 2);
        let k_all = self.repeat_kv(k_all).swap_dims(1, 2);
        let v_all = self.repeat_kv(v_all).swap_dims(1, 2);
        // One query row makes both products vector-matrix products over the cache length,
        // which some backends cannot run at every length (ClexBackend::GEMV_ANY_LENGTH): there
        // a copied second row (dropped after) makes them general matmuls.
        let rows = if s == 1 && !B::GEMV_ANY_LENGTH { 2 } else { s };
        let (q, mask) = if rows != s { (q.repeat_dim(2, 2), mask.clone().repeat_dim(2, 2)) } else { (q, mask.clone()) };
        let scores = q.matmul(k_all.swap_dims(2, 3)).mul_scalar(1.0 / (self.head_dim as f64).sqrt());
        // Mask and softmax in f32 whatever the compute dtype, as transformers' eager path
        // does; the mask value is a large finite f32 (rows that are all padding stay finite),
        // which f16 could not hold (libtorch refuses the conversion).
        let dtype = scores.dtype();
        let scores = if dtype == DType::F32 { scores } else { scores.cast(FloatDType::F32) };
        let probs = softmax(scores.mask_fill(mask, -1.0e30), 3);
        let probs = if dtype == DType::F32 { probs } else { probs.cast(dtype) };
        let out = probs.matmul(v_all); // [b, h, rows, d]
        let out = if rows == s { out } else { out.narrow(2, 0, s) }; // [b, h, s, d]
        let out = out.swap_dims(1, 2).reshape([b, s, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}
