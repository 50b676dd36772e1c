//! The training half of the backend parity suite on libtorch (burn-tch): CUDA device 0 when
//! the linked libtorch sees a GPU, the CPU otherwise. Opt-in, because it needs libtorch:
//! `cargo xtask setup-tch` once, then `cargo xtask test-tch` (which sets the environment and
//! runs `cargo test -p clex-train --features parity-tch --test backends_tch`).
#![cfg(feature = "parity-tch")]

mod common;

use burn_tch::{LibTorch, LibTorchDevice};
use clex_train::precision::Precision;
use common::parity::check_train_steps_against_flex;

type B = burn::backend::Autodiff<LibTorch<f32>>;

fn device() -> LibTorchDevice {
    if tch::Cuda::is_available() { LibTorchDevice::Cuda(0) } else { LibTorchDevice::Cpu }
}

#[test]
fn train_steps_match_flex() {
    check_train_steps_against_flex::<B>("tch", &device(), Precision::F32, 1e-4);
}

/// Mixed-precision training (f16 / bf16 compute over f32 master weights, the ODE in f32)
/// gives flex's losses for the same precision, within that dtype's rounding.
#[test]
fn half_precision_train_steps_match_flex() {
    for (precision, tol) in [(Precision::F16, 5e-3), (Precision::Bf16, 2e-2)] {
        check_train_steps_against_flex::<B>("tch", &device(), precision, tol);
    }
}
