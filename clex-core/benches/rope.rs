//! Criterion micro-benchmarks of the rotary machinery (issue 7, scope 1):
//! - the CLEX θ table solve θ(1..=T_max) for T_max = 16 and 64, d = 128, p = 1 and 2 (one
//!   solve over the grid [1, 2, .., T_max], what inference does once per parameter value);
//! - the rotary application `x·cos + rotate_half(x)·sin` on `[1, 32, 4096, 128]` (a 7B-shaped
//!   layer's queries at 4096 positions), and building its cos/sin tables.
//!
//! Run: `cargo bench -p clex-core --bench rope` (criterion's flags after `--`, e.g.
//! `-- --quick`). `cargo xtask bench` runs it and puts the medians into BENCHMARKS.md.
//! Threads: burn-flex's rayon pool takes `RAYON_NUM_THREADS` (default: every core); the
//! host ODE solver is single-threaded.

use std::hint::black_box;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor, TensorData};
use clex_core::ClexAct;
use clex_core::clex::OdeSpec;
use clex_core::rope::{apply_rotary_batched, base_inv_freq, cos_sin};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod common;
use common::weights;

fn theta_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("theta_table");
    group.sample_size(10);
    let spec = OdeSpec { dim: 128, act: ClexAct::Tanh, time_dt: 0.01 };
    for p in [1usize, 2] {
        let w = weights(128, p);
        for t_max in [16usize, 64] {
            group.bench_with_input(BenchmarkId::new(format!("d128_p{p}"), format!("T_max{t_max}")), &t_max, |b, &t_max| {
                b.iter(|| black_box(w.table(&spec, t_max)))
            });
        }
    }
    group.finish();
}

fn rotary(c: &mut Criterion) {
    let device = Default::default();
    let (heads, seq, dim) = (32usize, 4096usize, 128usize);
    let x = Tensor::<Flex, 4>::random([1, heads, seq, dim], Distribution::Normal(0.0, 1.0), &device);
    let inv = Tensor::<Flex, 1>::from_data(TensorData::new(base_inv_freq(1e4, dim), [dim / 2]), &device);
    let positions = || Tensor::<Flex, 1>::from_data(TensorData::new((0..seq).map(|m| m as f32).collect::<Vec<_>>(), [seq]), &device);
    let (cos, sin) = cos_sin(positions(), inv.clone(), 1.0);
    let (cos, sin) = (cos.unsqueeze::<3>(), sin.unsqueeze::<3>());

    let mut group = c.benchmark_group("rotary");
    group.sample_size(20);
    group.bench_function("apply_1x32x4096x128", |b| b.iter(|| black_box(apply_rotary_batched(x.clone(), cos.clone(), sin.clone()))));
    group.bench_function("cos_sin_4096x128", |b| b.iter(|| black_box(cos_sin(positions(), inv.clone(), 1.0))));
    group.finish();
}

criterion_group!(benches, theta_table, rotary);
criterion_main!(benches);
