//! The parity suite on the reference CPU backend (flex): f32, f16 and bf16 compute against
//! the goldens, full forwards and all 40 cached decode steps, each within its dtype's
//! tolerance. `cargo test -p clex-parity --test flex -- --nocapture`
//! prints every number. The training checks: clex-train's `tests/backends.rs`.

use burn::tensor::DType;
use clex_parity::{report, suite};

type B = burn_flex::Flex;

#[test]
fn f32_matches_the_goldens() {
    let d = Default::default();
    let checks = suite::<B>(&d, DType::F32, 40);
    report("flex f32", &checks);
}

#[test]
fn f16_matches_the_goldens_within_its_tolerance() {
    let d = Default::default();
    let checks = suite::<B>(&d, DType::F16, 40);
    report("flex f16", &checks);
}

#[test]
fn bf16_matches_the_goldens_within_its_tolerance() {
    let d = Default::default();
    let checks = suite::<B>(&d, DType::BF16, 40);
    report("flex bf16", &checks);
}
