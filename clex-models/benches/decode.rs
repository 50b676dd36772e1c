//! Criterion micro-benchmarks of cached decoding (issue 7, scope 1): one decode step with a
//! KV cache holding 1x, 4x and 8x P tokens, CLEX (T_max 16, reference cache policy) against
//! plain RoPE on the same weights, and the step that crosses a t boundary (CLEX re-rotates
//! every cached key once there).
//!
//! The model is LLaMA-shaped and small (4 layers, width 512, 8 heads of 64, vocab 8192,
//! P = 256) so the rotary and cache work is a visible share of a step; `cargo xtask bench`
//! measures whole models. `CLEX_BENCH_QUICK=1` halves the model and uses P = 64 (smoke runs).
//!
//! Run: `cargo bench -p clex-models --bench decode` (criterion's flags after `--`).
//!
//! Each measured step starts from the same cache (prefill, then one step): a clone (tensor
//! handles only) taken outside the timing, so every iteration appends to a cache of exactly
//! the stated length.

use std::hint::black_box;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use clex_core::{ClexAct, ClexParams};
use clex_models::{CachePolicy, CausalLm, ForwardOptions, KvCache, ModelConfig, attach_fresh_clex, init_model};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

type B = Flex;

struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    vocab: usize,
    p: usize,
}

fn shape() -> Shape {
    if std::env::var_os("CLEX_BENCH_QUICK").is_some() {
        Shape { hidden: 256, layers: 2, heads: 4, vocab: 4096, p: 64 }
    } else {
        Shape { hidden: 512, layers: 4, heads: 8, vocab: 8192, p: 256 }
    }
}

fn config(s: &Shape) -> ModelConfig {
    let raw = json!({
        "model_type": "llama",
        "vocab_size": s.vocab,
        "hidden_size": s.hidden,
        "intermediate_size": s.hidden * 11 / 4,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.heads,
        "max_position_embeddings": s.p,
        "rope_theta": 10000.0,
        "rope_scaling": null,
    });
    ModelConfig::from_json(raw, Path::new("bench")).expect("a valid bench config")
}

fn ids(n: usize, vocab: usize, offset: usize) -> Tensor<B, 2, Int> {
    let v: Vec<i32> = (0..n).map(|i| ((i + offset) * 7919 % vocab) as i32).collect();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

/// A cache holding `len` tokens in its decoding state: a prefill of `len - 1` tokens, then
/// one decode step (the first step after a prefill also makes its views contiguous).
fn prefilled(model: &CausalLm<B>, len: usize, vocab: usize) -> KvCache<B> {
    let mut cache = model.new_cache(CachePolicy::Reference);
    let opts = ForwardOptions::default();
    model.forward_with(ids(len - 1, vocab, 0), Some(&mut cache), &opts).expect("prefill");
    model.forward_with(ids(1, vocab, len - 1), Some(&mut cache), &opts).expect("step");
    cache
}

fn decode(c: &mut Criterion) {
    let s = shape();
    // The CLEX model is the plain one's weight tensors (shared, not copied) plus a CLEX layer:
    // two copies of the same weights can decode several % apart by where they sit in memory.
    let plain = init_model::<B>(config(&s), &Default::default(), 7);
    let params = ClexParams { max_factor: 16, param_factor: 1, act: ClexAct::Tanh, time_dt: 0.01 };
    let clex = attach_fresh_clex(plain.clone(), params).expect("a plain model");
    let models = [("rope", plain), ("clex", clex)];
    let opts = ForwardOptions::default();

    let mut group = c.benchmark_group("decode_step");
    group.sample_size(10);
    for factor in [1usize, 4, 8] {
        let ctx = factor * s.p;
        for (name, model) in &models {
            // ctx - 1 cached tokens: the step brings the total to ctx, inside t = factor.
            let cache = prefilled(model, ctx - 1, s.vocab);
            let token = ids(1, s.vocab, ctx);
            group.bench_function(BenchmarkId::new(*name, format!("{factor}P")), |b| {
                b.iter_batched_ref(
                    || cache.clone(),
                    |cache| black_box(model.forward_with(token.clone(), Some(cache), &opts).expect("step").logits),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    // The step from 4P to 4P + 1 tokens: t goes from 4 to 5, so CLEX re-rotates every
    // cached key of every layer; for plain RoPE it is an ordinary step.
    let ctx = 4 * s.p;
    for (name, model) in &models {
        let cache = prefilled(model, ctx, s.vocab);
        let token = ids(1, s.vocab, ctx + 1);
        group.bench_function(BenchmarkId::new(format!("{name}_boundary"), "4P"), |b| {
            b.iter_batched_ref(
                || cache.clone(),
                |cache| black_box(model.forward_with(token.clone(), Some(cache), &opts).expect("step").logits),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
