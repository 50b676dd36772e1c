//! Criterion benchmarks of attention on burn-flex, side by side (issue 16): our kernel
//! (`ClexBackend::grouped_attention`), burn-flex's own fused op (`burn::tensor::module::attention`,
//! KV heads repeated to the query heads, as it needs) and the explicit product-softmax-product,
//! at SmolLM2-135M's shape (9 query heads on 3 KV heads of 64) over a cache of 8192 positions
//! read through a prefix view of a larger buffer (what the KV cache hands attention):
//! - `decode`: one new token;
//! - `prefill_chunk`: a 512-token chunk at the end of the 8192 (chunked prefill's last chunk).
//!
//! Those caches (12.6 MB of K/V) stay in a 32 MB L3 between iterations, which a model's
//! decode step, reading every layer's cache once, does not: `attention_smollm2_32k_layers`
//! decodes one token over 32768 cached positions of each of 8 layers in turn (403 MB of
//! K/V), ours only (the other paths take seconds there), with the bytes read as throughput.
//!
//! Run: `cargo bench -p clex-core --bench attention` (criterion's flags after `--`, e.g.
//! `-- --quick`). Threads: `RAYON_NUM_THREADS` (default: every core).

use std::hint::black_box;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use clex_core::attention::{KeyMask, attention, explicit, fused};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const KEYS: usize = 8192;

fn inputs(seq: usize) -> [Tensor<Flex, 4>; 3] {
    let device = Default::default();
    let rand = |shape: [usize; 4]| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    // The cache: room for 1024 more positions, read through a prefix view.
    let k = rand([1, KEYS + 1024, 3, 64]).narrow(1, 0, KEYS);
    let v = rand([1, KEYS + 1024, 3, 64]).narrow(1, 0, KEYS);
    [rand([1, seq, 9, 64]), k, v]
}

fn paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_smollm2_8k");
    group.sample_size(10);
    let mask = KeyMask::causal();
    for (name, seq) in [("decode", 1usize), ("prefill_chunk", 512)] {
        let [q, k, v] = inputs(seq);
        group.bench_with_input(BenchmarkId::new("ours", name), &seq, |b, _| {
            b.iter(|| black_box(attention(q.clone(), k.clone(), v.clone(), &mask)).into_data())
        });
        group.bench_with_input(BenchmarkId::new("burn_fused", name), &seq, |b, _| {
            b.iter(|| black_box(fused(q.clone(), k.clone(), v.clone(), &mask)).into_data())
        });
        group.bench_with_input(BenchmarkId::new("explicit", name), &seq, |b, _| {
            b.iter(|| black_box(explicit(q.clone(), k.clone(), v.clone(), &mask)).into_data())
        });
    }
    group.finish();
}

/// Decode over caches that do not fit the last-level cache, as in a model.
fn from_memory(c: &mut Criterion) {
    const LONG: usize = 32768;
    const LAYERS: usize = 8;
    let device = Default::default();
    let rand = |shape: [usize; 4]| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let caches: Vec<_> =
        (0..LAYERS).map(|_| (rand([1, LONG + 1024, 3, 64]).narrow(1, 0, LONG), rand([1, LONG + 1024, 3, 64]).narrow(1, 0, LONG))).collect();
    let q = rand([1, 1, 9, 64]);
    let mask = KeyMask::causal();
    let mut group = c.benchmark_group("attention_smollm2_32k_layers");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((LAYERS * 2 * LONG * 3 * 64 * 4) as u64));
    group.bench_function(BenchmarkId::new("ours", "decode"), |b| {
        b.iter(|| {
            for (k, v) in &caches {
                black_box(attention(q.clone(), k.clone(), v.clone(), &mask).into_data());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, paths, from_memory);
criterion_main!(benches);
