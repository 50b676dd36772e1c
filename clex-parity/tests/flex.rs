//! The parity suite on the reference CPU backend (flex): f32 against the goldens, and f16
//! compute with its documented tolerance. `cargo test -p clex-parity --test flex -- --nocapture`
//! prints every number.

use burn::tensor::DType;
use clex_parity::{report, suite, train_losses};

type B = burn_flex::Flex;

#[test]
fn f32_matches_the_goldens() {
    let d = Default::default();
    let checks = suite::<B>(&d, DType::F32, true);
    report("flex f32", &checks);
}

#[test]
fn f16_matches_the_goldens_within_its_tolerance() {
    let d = Default::default();
    let checks = suite::<B>(&d, DType::F16, false);
    report("flex f16", &checks);
}

#[test]
fn train_steps_lower_the_loss() {
    let losses = train_losses::<burn::backend::Autodiff<B>>(&Default::default(), 4);
    eprintln!("flex train losses: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < losses[0], "{losses:?}");
}
