//! Multi-head attention with GQA, rotary (full or partial), optional CLEX query log-scaling
//! and the CLEX-aware KV cache. The one attention implementation of both architectures.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};
use clex_core::ClexBackend;
use clex_core::attention::{KeyMask, attention};
use clex_core::rope::apply_rotary_seq_major;

use crate::cache::LayerCache;

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

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `mask`: which cached and new keys each new token sees (causal, left padding)
    /// - `kv`: this layer's cache and the forward's [`Plan`] for it
    /// - returns `[batch, seq, hidden]`
    ///
    /// Queries, keys, values and the cache stay sequence-major (`[batch, seq, heads, d]`,
    /// the projections' layout): rotation and cache appends work on contiguous tensors, and
    /// the backend's attention ([`clex_core::attention`]) reads the cache where it lies, with
    /// grouped KV heads.
    pub fn forward(&self, x: Tensor<B, 3>, rot: &RotaryBatch<B>, kv: LayerCache<'_, B>, mask: &KeyMask) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let q = self.split_heads(self.q_proj.forward(x.clone()), self.num_heads);
        let k = self.split_heads(self.k_proj.forward(x.clone()), self.num_kv_heads);
        let v = self.split_heads(self.v_proj.forward(x), self.num_kv_heads);

        let mut q = apply_rotary_seq_major(q, rot.cos.clone(), rot.sin.clone());
        if let Some(scale) = rot.query_scale {
            q = q.mul_scalar(scale);
        }
        let out = match kv {
            LayerCache::None => attention(q, apply_rotary_seq_major(k, rot.cos.clone(), rot.sin.clone()), v, mask),
            LayerCache::Shared(kv, plan) => {
                let (k_all, v_all) = kv.append(k, v, &rot.cos, &rot.sin, plan);
                attention(q, k_all, v_all, mask)
            }
            LayerCache::PerRow(rows) => {
                // Each row attends to its own cache; `rot` holds one table row per batch row.
                let row = |t: &Tensor<B, 4>, i| t.clone().narrow(0, i, 1);
                let outs = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let q = row(&q, i);
                        let q = match r.query_scale {
                            Some(scale) => q.mul_scalar(scale),
                            None => q,
                        };
                        let (cos, sin) = (rot.cos.clone().narrow(0, i, 1), rot.sin.clone().narrow(0, i, 1));
                        let (k_all, v_all) = r.kv.append(row(&k, i), row(&v, i), &cos, &sin, r.plan);
                        attention(q, k_all, v_all, mask)
                    })
                    .collect();
                Tensor::cat(outs, 0)
            }
        }; // [b, s, heads, d]
        self.o_proj.forward(out.reshape([b, s, self.num_heads * self.head_dim]))
    }
}
