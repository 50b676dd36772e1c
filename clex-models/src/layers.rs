//! The blocks every architecture is made of: norms, MLPs and the decoder block, with the
//! LLaMA (sequential, RMSNorm, SwiGLU), GPT-NeoX (parallel or sequential, LayerNorm, GELU
//! MLP), Phi-2 (parallel, one LayerNorm shared by attention and MLP) and Mixtral (sparse
//! mixture of SwiGLU experts, [`MoeMlp`]) variants as enum cases so one forward serves all.

use std::cell::Cell;

use burn::module::Module;
use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::{DType, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};
use clex_core::ClexBackend;
use clex_core::attention::KeyMask;

use crate::attention::{Attention, RotaryBatch};
use crate::cache::LayerCache;
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

/// A sparse mixture of SwiGLU experts (Mixtral's `block_sparse_moe`, transformers 4.36
/// semantics): router logits `h Gᵀ`, softmax over all experts in f32, the top k renormalised
/// to sum to 1, `out = Σ_j w_j · expert_{sel_j}(h)`. No router noise, no capacity limit.
///
/// Tokens are dispatched to the experts they chose: each expert runs once on the rows routed
/// to it (gathered with `select`, added back with `select_assign`), so a decode step runs k
/// of the E experts ([`expert_forwards`] counts them).
#[derive(Module, Debug)]
pub struct MoeMlp<B: Backend> {
    /// The router (`gate`, `[hidden, experts]`, no bias).
    pub router: Linear<B>,
    /// The experts (`w1` = gate_proj, `w3` = up_proj, `w2` = down_proj).
    pub experts: Vec<GatedMlp<B>>,
    /// Experts per token.
    pub experts_per_token: usize,
}

/// The feed-forward part of a block.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per layer; boxing would only add indirection
pub enum Mlp<B: Backend> {
    /// LLaMA SwiGLU.
    Gated(GatedMlp<B>),
    /// GPT-NeoX / Phi-2 two-layer MLP.
    Plain(PlainMlp<B>),
    /// Mixtral sparse mixture of experts.
    Moe(MoeMlp<B>),
}

thread_local! {
    /// Expert forwards run on this thread ([`expert_forwards`]).
    static EXPERT_FORWARDS: Cell<usize> = const { Cell::new(0) };
}

/// How many expert forwards (one per expert that received at least one token, per MoE
/// layer call) this thread has run: the measurement behind "a decode step reads k of E
/// experts". Per thread, so concurrent tests do not count each other's.
pub fn expert_forwards() -> usize {
    EXPERT_FORWARDS.with(Cell::get)
}

/// Router logits within this of the k-th largest (relative to the largest magnitude, at
/// least 1) count as tied with it: f32 noise between a prefill and a decode step (a few
/// ulps, ~1e-6 relative) must not flip which expert a token gets. Genuine margins in the
/// official goldens are ≥ 1.05e-3.
const ROUTER_TIE_BAND: f32 = 1e-5;

/// The `k` experts a token with router logits `row` goes to, best first: strictly larger
/// logits win; logits tied with the k-th largest (within [`ROUTER_TIE_BAND`]) go to the
/// lowest expert index. Deterministic, and the same for logits that differ by f32 noise.
pub fn route_token(row: &[f32], k: usize) -> Vec<usize> {
    // Non-finite logits (overflowed half-precision activations, or weights loaded with
    // --allow-nonfinite) rank last: NaN compares as nothing and ∞ − ∞ is NaN, which would
    // leave fewer than k experts.
    let finite: Vec<f32> = row.iter().map(|&x| if x.is_finite() { x } else { f32::MIN }).collect();
    let row = finite.as_slice();
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let k = k.min(row.len());
    if k == 0 || k == row.len() {
        order.truncate(k);
        return order;
    }
    let scale = row.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let band = ROUTER_TIE_BAND * scale;
    let kth = row[order[k - 1]];
    // Certain winners: clearly above the k-th; the tied ones fill the rest by index.
    let mut chosen: Vec<usize> = order.iter().copied().filter(|&e| row[e] > kth + band).collect();
    let mut tied: Vec<usize> = order.iter().copied().filter(|&e| (row[e] - kth).abs() <= band).collect();
    tied.sort_unstable();
    chosen.extend(tied.into_iter().take(k - chosen.len()));
    // Always k (a band that misses the k-th itself cannot happen with finite logits, but
    // routing must never hand the dispatch fewer rows than it was shaped for).
    for &e in &order {
        if chosen.len() == k {
            break;
        }
        if !chosen.contains(&e) {
            chosen.push(e);
        }
    }
    chosen
}

/// The router's load-balancing loss as transformers computes it (Switch Transformer eqs.
/// 4-6, `load_balancing_loss_func` since transformers 4.38): over the tokens of every MoE
/// layer together, `E · Σ_e f_e · P_e` with `f_e` the expert's share of the top-k slots per
/// token (Σ_e f_e = k) and `P_e` its mean router probability (f32 softmax over all experts).
/// Only `P_e` carries a gradient. The experts counted are the ones the forward chose
/// ([`route_token`]). transformers 4.36, which the official CLEX code pins, computed a
/// variant that always equals E / k and trains nothing (fixed upstream after 4.36).
///
/// # Shapes
/// - `router_logits`: per MoE layer `[tokens, experts]` → `[1]`
pub fn load_balancing_loss<B: Backend>(router_logits: &[Tensor<B, 2>], experts_per_token: usize) -> Option<Tensor<B, 1>> {
    let first = router_logits.first()?;
    let [_, experts] = first.dims();
    let device = first.device();
    let logits = Tensor::cat(router_logits.iter().map(|l| l.clone().cast(FloatDType::F32)).collect(), 0);
    let rows = logits.dims()[0];
    let host = logits.clone().into_data().convert::<f32>().to_vec::<f32>().expect("f32 router logits");
    let mut counts = vec![0.0f32; experts];
    for row in host.chunks(experts) {
        for e in route_token(row, experts_per_token) {
            counts[e] += 1.0;
        }
    }
    let share: Vec<f32> = counts.iter().map(|c| c / rows as f32).collect();
    let share = Tensor::<B, 1>::from_data(TensorData::new(share, [experts]), (&device, DType::F32));
    let mean_prob = softmax(logits, 1).mean_dim(0).reshape([experts]);
    Some((share * mean_prob).sum().mul_scalar(experts as f32))
}

impl<B: Backend> GatedMlp<B> {
    /// `down(σ(gate(x)) · up(x))`, `[b, s, hidden]` → `[b, s, hidden]`.
    fn forward(&self, x: Tensor<B, 3>, act: Activation) -> Tensor<B, 3> {
        self.down_proj.forward(activate(act, self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

impl<B: Backend> MoeMlp<B> {
    /// The mixture's output and the router logits.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → (`[batch, seq, hidden]`, router logits `[batch·seq, experts]`
    ///   in the compute dtype)
    pub fn forward(&self, x: Tensor<B, 3>, act: Activation) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let [b, s, h] = x.dims();
        let (tokens, experts, k) = (b * s, self.experts.len(), self.experts_per_token);
        let device = x.device();
        let flat = x.reshape([tokens, h]);
        let logits = self.router.forward(flat.clone());
        let dtype = logits.dtype();
        let logits_f32 = if dtype == DType::F32 { logits.clone() } else { logits.clone().cast(FloatDType::F32) };
        let probs = softmax(logits_f32.clone(), 1);
        // The choice is made on the host (the experts to run must be known there anyway);
        // the weights stay on the device so the router is trained through them.
        let host = logits_f32.into_data().convert::<f32>().to_vec::<f32>().expect("f32 router logits");
        let chosen: Vec<Vec<usize>> = host.chunks(experts).map(|row| route_token(row, k)).collect();
        let flat_sel: Vec<i64> = chosen.iter().flatten().map(|&e| e as i64).collect();
        let sel = Tensor::<B, 2, Int>::from_data(TensorData::new(flat_sel, [tokens, k]), &device);
        let weights = probs.gather(1, sel);
        let weights = weights.clone() / weights.sum_dim(1);
        let weights = if dtype == DType::F32 { weights } else { weights.cast(dtype) }.reshape([tokens * k]);
        let mut out: Option<Tensor<B, 2>> = None;
        for (e, expert) in self.experts.iter().enumerate() {
            // (token, slot) pairs routed to expert e, in token order.
            let (rows, slots): (Vec<i64>, Vec<i64>) = chosen
                .iter()
                .enumerate()
                .filter_map(|(t, sel)| sel.iter().position(|&x| x == e).map(|j| (t as i64, (t * k + j) as i64)))
                .unzip();
            if rows.is_empty() {
                continue;
            }
            EXPERT_FORWARDS.with(|c| c.set(c.get() + 1));
            let n = rows.len();
            let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [n]), &device);
            let w = weights.clone().select(0, slots).reshape([n, 1]);
            if n == tokens {
                // Every token (a decode step's one): no gather or scatter needed.
                let y = expert.forward(flat.clone().reshape([1, n, h]), act).reshape([n, h]) * w;
                out = Some(match out {
                    Some(o) => o + y,
                    None => y,
                });
                continue;
            }
            let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
            let y = expert.forward(flat.clone().select(0, rows.clone()).reshape([1, n, h]), act).reshape([n, h]) * w;
            let base = out.unwrap_or_else(|| Tensor::zeros([tokens, h], (&device, dtype)));
            out = Some(base.select_assign(0, rows, y, IndexingUpdateOp::Add));
        }
        (out.expect("every token is routed to k ≥ 1 experts").reshape([b, s, h]), logits)
    }
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
        self.forward_routed(x, act, None)
    }

    /// [`Mlp::forward`], pushing a mixture's router logits `[batch·seq, experts]` to `router`.
    pub fn forward_routed(&self, x: Tensor<B, 3>, act: Activation, router: Option<&mut Vec<Tensor<B, 2>>>) -> Tensor<B, 3> {
        match self {
            Mlp::Gated(m) => m.forward(x, act),
            Mlp::Plain(m) => m.dense_4h_to_h.forward(activate(act, m.dense_h_to_4h.forward(x))),
            Mlp::Moe(m) => {
                let (out, logits) = m.forward(x, act);
                if let Some(r) = router {
                    r.push(logits);
                }
                out
            }
        }
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention (HF `input_layernorm`).
    pub input_norm: Norm<B>,
    /// Norm before the MLP (HF `post_attention_layernorm`); `None` when the MLP reads the
    /// input norm's output (Phi-2's one LayerNorm per block).
    pub post_norm: Option<Norm<B>>,
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
    pub fn forward(&self, x: Tensor<B, 3>, act: Activation, rot: &RotaryBatch<B>, kv: LayerCache<'_, B>, mask: &KeyMask) -> Tensor<B, 3> {
        self.forward_routed(x, act, rot, kv, mask, None)
    }

    /// [`Block::forward`], pushing a mixture's router logits `[batch·seq, experts]` to `router`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_routed(
        &self,
        x: Tensor<B, 3>,
        act: Activation,
        rot: &RotaryBatch<B>,
        kv: LayerCache<'_, B>,
        mask: &KeyMask,
        router: Option<&mut Vec<Tensor<B, 2>>>,
    ) -> Tensor<B, 3> {
        let normed = self.input_norm.forward(x.clone());
        let attn = self.attention.forward(normed.clone(), rot, kv, mask);
        if self.parallel_residual {
            let mlp_in = match &self.post_norm {
                Some(n) => n.forward(x.clone()),
                None => normed,
            };
            let mlp = self.mlp.forward_routed(mlp_in, act, router);
            x + attn + mlp
        } else {
            let h = x + attn;
            let mlp_in = self.post_norm.as_ref().unwrap_or(&self.input_norm).forward(h.clone());
            h + self.mlp.forward_routed(mlp_in, act, router)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{load_balancing_loss, route_token};
    use burn::tensor::{Tensor, TensorData};

    /// transformers' formula by hand: two layers of two tokens over 3 experts, top-2.
    #[test]
    fn load_balancing_loss_is_transformers_formula() {
        type B = burn::backend::Flex;
        let rows = [[2.0f32, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.5, -1.0], [0.5, 0.0, 0.2]];
        let layer = |r: &[[f32; 3]]| Tensor::<B, 2>::from_data(TensorData::new(r.concat(), [2, 3]), &Default::default());
        let got = load_balancing_loss(&[layer(&rows[..2]), layer(&rows[2..])], 2).unwrap().into_scalar();
        let softmax = |r: &[f32; 3]| {
            let z: f32 = r.iter().map(|x| x.exp()).sum();
            r.map(|x| x.exp() / z)
        };
        // Chosen: {0,1}, {2,1}, {1,0}, {0,2}: shares 3/4, 3/4, 2/4.
        let f = [0.75f32, 0.75, 0.5];
        let p: Vec<f32> = (0..3).map(|e| rows.iter().map(|r| softmax(r)[e]).sum::<f32>() / 4.0).collect();
        let want = 3.0 * (0..3).map(|e| f[e] * p[e]).sum::<f32>();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(load_balancing_loss::<B>(&[], 2).is_none());
    }

    /// Clear winners by value; a tie with the k-th (exact, or within f32 noise either way)
    /// goes to the lowest index, so noise cannot flip it.
    #[test]
    fn routing_is_by_value_and_ties_go_to_the_lowest_index() {
        assert_eq!(route_token(&[0.1, 0.9, -0.2, 0.5], 2), [1, 3]);
        assert_eq!(route_token(&[0.5, 0.3, 0.3, 0.1], 2), [0, 1]);
        for noisy in [[0.5, 0.3 + 3e-8, 0.3, 0.1], [0.5, 0.3, 0.3 + 3e-8, 0.1]] {
            assert_eq!(route_token(&noisy, 2), [0, 1], "{noisy:?}");
        }
        // A gap of 1e-3 (the goldens' smallest margin) is not a tie.
        assert_eq!(route_token(&[0.5, 0.3, 0.301, 0.1], 2), [0, 2]);
        // Three-way tie for two places; k = E and k = 1.
        assert_eq!(route_token(&[0.2, 0.2, 0.2, 0.2], 2), [0, 1]);
        // Non-finite logits rank last and never leave fewer than k experts.
        assert_eq!(route_token(&[f32::NAN, 1.0, 0.0], 2), [1, 2]);
        assert_eq!(route_token(&[f32::INFINITY, f32::INFINITY, 0.5], 2), [2, 0]);
        assert_eq!(route_token(&[f32::NAN, f32::NAN, f32::NAN], 2).len(), 2);
        assert_eq!(route_token(&[0.1, 0.2], 2), [1, 0]);
        assert_eq!(route_token(&[0.1, 0.2, 0.2 + 1e-9], 1), [1]);
    }
}
