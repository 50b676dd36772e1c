//! CLEX θ(t) solve: forward and forward+backward of the hand-written solver vs burn's
//! autodiff through plain tensor ops, side by side in one run, on one CPU core.
//!
//! Run: `cargo bench -p clex-core --bench ode_solve` (prints a markdown table; the numbers
//! in BENCHMARKS.md come from it). `-- --quick` runs fewer repetitions.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use clex_core::clex::OdeSpec;
use clex_core::clex::naive::theta_by_tensor_ops;
use clex_core::{ClexAct, ClexLayerConfig, ClexParams};

mod common;
use common::weights;

type AD = Autodiff<Flex>;

/// Median wall time of `reps` runs, in milliseconds.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // One core: the solver is sequential, and burn-flex's rayon pool must not hide costs.
    rayon_one_thread();
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 11 };
    let spec = OdeSpec { dim: 128, act: ClexAct::Tanh, time_dt: 0.01 };
    let w = weights(128, 1);
    let lw: Vec<f32> = (0..64).map(|i| 1.0 + i as f32).collect();

    println!("| what (d = 128, p = 1, h = 0.01, 1 core) | t | steps | median ms |");
    println!("|---|---|---|---|");
    for t in [4usize, 16, 64] {
        let steps = 100 * (t - 1);
        let fwd = median_ms(reps, || {
            std::hint::black_box(w.theta(&spec, t));
        });
        let fwd_bwd = median_ms(reps, || {
            let tape = w.theta_taped(&spec, t);
            std::hint::black_box(tape.backward(&lw));
        });
        println!("| host solver, forward | {t} | {steps} | {fwd:.2} |");
        println!("| host solver, forward + backward | {t} | {steps} | {fwd_bwd:.2} |");
    }
    let table = median_ms(reps, || {
        std::hint::black_box(w.table(&spec, 64));
    });
    println!("| inference table θ(1..=64), one solve | 64 | 6300 | {table:.2} |");

    // Through burn: the custom autodiff node vs burn's autodiff through every stage.
    println!();
    println!("| forward + backward on Autodiff<Flex> (1 core) | t | custom node ms | plain autodiff ms | ratio |");
    println!("|---|---|---|---|---|");
    let device = Default::default();
    let cfg = ClexLayerConfig::new(128, 4096).with_params(ClexParams::fresh(64));
    for t in [2usize, 4, 8] {
        let custom = median_ms(reps.min(5), || {
            let layer = cfg
                .init_with::<AD>(
                    Tensor::from_data(TensorData::new(w.inv_freq.clone(), [64]), &device),
                    Tensor::from_data(TensorData::new(w.up.clone(), [64, 128]), &device),
                    Tensor::from_data(TensorData::new(w.down.clone(), [128, 64]), &device),
                )
                .unwrap();
            let loss = (layer.theta_train(t) * Tensor::<AD, 1>::from_data(TensorData::new(lw.clone(), [64]), &device)).sum();
            std::hint::black_box(loss.backward());
        });
        let plain = median_ms(if quick { 1 } else { 3 }, || {
            let up = Param::from_tensor(Tensor::<AD, 2>::from_data(TensorData::new(w.up.clone(), [64, 128]), &device));
            let down = Param::from_tensor(Tensor::<AD, 2>::from_data(TensorData::new(w.down.clone(), [128, 64]), &device));
            let inv = Tensor::<AD, 1>::from_data(TensorData::new(w.inv_freq.clone(), [64]), &device);
            let theta = theta_by_tensor_ops(inv, up.val(), down.val(), &spec, t);
            let loss = (theta * Tensor::<AD, 1>::from_data(TensorData::new(lw.clone(), [64]), &device)).sum();
            std::hint::black_box(loss.backward());
        });
        println!("| θ(t) then Σ w·θ, backward | {t} | {custom:.2} | {plain:.1} | {:.0}x |", plain / custom);
    }
}

fn rayon_one_thread() {
    // SAFETY: set before any thread is spawned; burn-flex reads it when building its pool.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
}
