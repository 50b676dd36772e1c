//! The parity suite on libtorch (burn-tch): CUDA device 0 when the linked libtorch sees a GPU,
//! the CPU otherwise. Opt-in, because it needs libtorch: `cargo xtask setup-tch` once, then
//! `cargo xtask test-tch` (which sets the environment and runs
//! `cargo test -p clex-parity --no-default-features --features tch`).
#![cfg(feature = "tch")]

use burn::tensor::DType;
use burn_tch::{LibTorch, LibTorchDevice};
use clex_parity::{report, suite, train_losses, train_run};
use clex_train::precision::Precision;

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

#[test]
fn train_steps_match_flex() {
    let got = train_losses::<burn::backend::Autodiff<B>>(&device(), 4);
    let want = train_losses::<burn::backend::Autodiff<burn_flex::Flex>>(&Default::default(), 4);
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("train losses: tch {got:?}, flex {want:?}; max |diff| {worst:.2e}");
    assert!(worst < 1e-4, "tch {got:?} vs flex {want:?}");
}

/// Mixed-precision training (f16 / bf16 compute over f32 master weights, the ODE in f32)
/// gives flex's losses for the same precision, within that dtype's rounding.
#[test]
fn half_precision_train_steps_match_flex() {
    for (precision, tol) in [(Precision::F16, 5e-3), (Precision::Bf16, 2e-2)] {
        let (got, _) = train_run::<burn::backend::Autodiff<B>>(&device(), 4, precision);
        let (want, _) = train_run::<burn::backend::Autodiff<burn_flex::Flex>>(&Default::default(), 4, precision);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{} train losses: tch {got:?}, flex {want:?}; max |diff| {worst:.2e}", precision.as_str());
        assert!(worst < tol, "{}: tch {got:?} vs flex {want:?}", precision.as_str());
    }
}
