//! The blocks both architectures are made of: norms, MLPs and the decoder block, with the
//! LLaMA (sequential, RMSNorm, SwiGLU) and GPT-NeoX (parallel or sequential, LayerNorm,
//! GELU MLP) variants as enum cases so one forward serves both.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::activation::{gelu, silu};
use burn::tensor::{Bool, Tensor, backend::Backend};
use clex_core::ClexBackend;

use crate::attention::{Attention, RotaryBatch};
use crate::cache::{LayerKv, Plan};
use crate::config::Activation;

/// RMSNorm (LLaMA) or LayerNorm (GPT-NeoX).
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// `x / rms(x) · w`, statistics in f32.
    Rms(RmsNorm<B>),
    /// `(x − mean) / std · w + b`.
    Layer(LayerNorm<B>),
}

impl<B: Backend> Norm<B> {
    /// `[.., hidden]` → `[.., hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => n.forward(x),
        }
    }
}

/// `down(σ(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct GatedMlp<B: Backend> {
    /// gate_proj.
    pub gate_proj: Linear<B>,
    /// up_proj.
    pub up_proj: Linear<B>,
    /// down_proj.
    pub down_proj: Linear<B>,
}

/// `out(σ(in(x)))`.
#[derive(Module, Debug)]
pub struct PlainMlp<B: Backend> {
    /// dense_h_to_4h.
    pub dense_h_to_4h: Linear<B>,
    /// dense_4h_to_h.
    pub dense_4h_to_h: Linear<B>,
}

/// The feed-forward part of a block.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per layer; boxing would only add indirection
pub enum Mlp<B: Backend> {
    /// LLaMA SwiGLU.
    Gated(GatedMlp<B>),
    /// GPT-NeoX two-layer MLP.
    Plain(PlainMlp<B>),
}

fn activate<B: Backend>(act: Activation, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match act {
        Activation::Silu => silu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => burn::tensor::activation::gelu_approximate(x),
    }
}

impl<B: Backend> Mlp<B> {
    /// `[b, s, hidden]` → `[b, s, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>, act: Activation) -> Tensor<B, 3> {
        match self {
            Mlp::Gated(m) => m.down_proj.forward(activate(act, m.gate_proj.forward(x.clone())) * m.up_proj.forward(x)),
            Mlp::Plain(m) => m.dense_4h_to_h.forward(activate(act, m.dense_h_to_4h.forward(x))),
        }
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention (HF `input_layernorm`).
    pub input_norm: Norm<B>,
    /// Norm before the MLP (HF `post_attention_layernorm`).
    pub post_norm: Norm<B>,
    /// Self-attention.
    pub attention: Attention<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` instead of the sequential form.
    pub parallel_residual: bool,
}

impl<B: ClexBackend> Block<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        act: Activation,
        rot: &RotaryBatch<B>,
        kv: Option<(&mut LayerKv<B>, &Plan<B>)>,
        mask: &Tensor<B, 4, Bool>,
    ) -> Tensor<B, 3> {
        let attn = self.attention.forward(self.input_norm.forward(x.clone()), rot, kv, mask);
        if self.parallel_residual {
            let mlp = self.mlp.forward(self.post_norm.forward(x.clone()), act);
            x + attn + mlp
        } else {
            let h = x + attn;
            h.clone() + self.mlp.forward(self.post_norm.forward(h), act)
        }
    }
}
