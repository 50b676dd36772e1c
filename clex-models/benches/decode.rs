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
//! Each measured step is a [`Session::step`] from the same session (prefill, then one step):
//! a clone (the cache's tensor handles only) taken outside the timing, so every iteration
//! appends to a cache of exactly the stated length. A step reads its row of logits back to the
//! host (one `vocab`-long f32 row, 32 KiB, as generation does), which the bench did not do
//! before Session (`forward_with`, logits left in a tensor): two copies of 32 KiB, microseconds
//! against the 7-18 ms steps of BENCHMARKS.md, so the figures stay comparable.

use std::hint::black_box;
use std::path::Path;

use burn::backend::Flex;
use clex_core::ClexParams;
use clex_models::{CachePolicy, CausalLm, ModelConfig, Session, attach_fresh_clex, init_model};
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

/// Token id `i` of the bench's sequence.
fn id(i: usize, vocab: usize) -> u32 {
    (i * 7919 % vocab) as u32
}

/// A session holding `len` tokens in its decoding state: a prefill of `len - 1` tokens, then
/// one decode step (the first step after a prefill also makes the cache's views contiguous).
fn prefilled(model: &CausalLm<B>, len: usize, vocab: usize) -> Session<'_, B> {
    let mut session = Session::new(model, CachePolicy::Reference);
    session.prefill(&(0..len - 1).map(|i| id(i, vocab)).collect::<Vec<_>>()).expect("prefill");
    session.step(id(len - 1, vocab)).expect("step");
    session
}

fn decode(c: &mut Criterion) {
    let s = shape();
    // The CLEX model is the plain one's weight tensors (shared, not copied) plus a CLEX layer:
    // two copies of the same weights can decode several % apart by where they sit in memory.
    let plain = init_model::<B>(config(&s), &Default::default(), 7);
    let clex = attach_fresh_clex(plain.clone(), ClexParams::fresh(16)).expect("a plain model");
    let models = [("rope", plain), ("clex", clex)];

    let mut group = c.benchmark_group("decode_step");
    group.sample_size(10);
    for factor in [1usize, 4, 8] {
        let ctx = factor * s.p;
        for (name, model) in &models {
            // ctx - 1 cached tokens: the step brings the total to ctx, inside t = factor.
            let session = prefilled(model, ctx - 1, s.vocab);
            let token = id(ctx, s.vocab);
            group.bench_function(BenchmarkId::new(*name, format!("{factor}P")), |b| {
                b.iter_batched_ref(|| session.clone(), |session| black_box(session.step(token).expect("step")), BatchSize::PerIteration)
            });
        }
    }
    // The step from 4P to 4P + 1 tokens: t goes from 4 to 5, so CLEX re-rotates every
    // cached key of every layer; for plain RoPE it is an ordinary step.
    let ctx = 4 * s.p;
    for (name, model) in &models {
        let session = prefilled(model, ctx, s.vocab);
        let token = id(ctx + 1, s.vocab);
        group.bench_function(BenchmarkId::new(format!("{name}_boundary"), "4P"), |b| {
            b.iter_batched_ref(|| session.clone(), |session| black_box(session.step(token).expect("step")), BatchSize::PerIteration)
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
