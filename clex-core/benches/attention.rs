//! Criterion benchmarks of attention on burn-flex, side by side (issue 16): our kernel
//! (`ClexBackend::grouped_attention`), burn-flex's own fused op (`burn::tensor::module::attention`,
//! KV heads repeated to the query heads, as it needs) and the explicit product-softmax-product,
//! at SmolLM2-135M's shape (9 query heads on 3 KV heads of 64) over a cache of 8192 positions
//! read through a prefix view of a larger buffer (what the KV cache hands attention):
//! - `decode`: one new token;
//! - `prefill_chunk`: a 512-token chunk at the end of the 8192 (chunked prefill's last chunk).
//!
//! Run: `cargo bench -p clex-core --bench attention` (criterion's flags after `--`, e.g.
//! `-- --quick`). Threads: `RAYON_NUM_THREADS` (default: every core).

use std::hint::black_box;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use clex_core::attention::{KeyMask, attention, explicit, fused};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

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

criterion_group!(benches, paths);
criterion_main!(benches);
