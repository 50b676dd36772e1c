//! The parity suite on libtorch (burn-tch): CUDA device 0 when the linked libtorch sees a GPU,
//! the CPU otherwise. Opt-in, because it needs libtorch: `cargo xtask setup-tch` once, then
//! `cargo xtask test-tch` (which sets the environment and runs
//! `cargo test -p clex-parity --no-default-features --features tch`, and clex-train's
//! training checks on libtorch, `tests/backends_tch.rs`).
#![cfg(feature = "tch")]

use burn::tensor::DType;
use burn_tch::{LibTorch, LibTorchDevice};
use clex_parity::{report, suite};

type B = LibTorch<f32>;

fn device() -> LibTorchDevice {
    if tch::Cuda::is_available() { LibTorchDevice::Cuda(0) } else { LibTorchDevice::Cpu }
}

#[test]
fn f32_matches_the_goldens() {
    let d = device();
    let checks = suite::<B>(&d, DType::F32, 40);
    report(&format!("tch {d:?} f32"), &checks);
}

#[test]
fn half_precision_matches_the_goldens_within_its_tolerance() {
    let d = device();
    for dtype in [DType::F16, DType::BF16] {
        let checks = suite::<B>(&d, dtype, 40);
        report(&format!("tch {d:?} {dtype:?}"), &checks);
    }
}
