//! The parity suite on the reference CPU backend (flex): f32, f16 and bf16 compute against
//! the goldens, full forwards and all 40 cached decode steps, each within its dtype's
//! tolerance. `cargo test -p clex-parity --test flex -- --nocapture`
//! prints every number.

use burn::tensor::DType;
use clex_parity::{report, suite, train_losses, train_run};
use clex_train::precision::Precision;

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

#[test]
fn train_steps_lower_the_loss() {
    let losses = train_losses::<burn::backend::Autodiff<B>>(&Default::default(), 4);
    eprintln!("flex train losses: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < losses[0], "{losses:?}");
}

/// Mixed precision: f16 / bf16 compute over f32 master weights, the ODE in f32. The losses
/// follow the f32 run within the dtype's rounding (f16: 10 mantissa bits, bf16: 7), every
/// parameter is still f32 afterwards, and the loss falls.
#[test]
fn half_precision_training_tracks_f32() {
    let d = Default::default();
    let (want, _) = train_run::<burn::backend::Autodiff<B>>(&d, 4, Precision::F32);
    for (precision, tol) in [(Precision::F16, 5e-3), (Precision::Bf16, 2e-2)] {
        let (got, model) = train_run::<burn::backend::Autodiff<B>>(&d, 4, precision);
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
        eprintln!("flex {} train losses: {got:?} (f32 {want:?}); worst |diff| {worst:.2e}, tolerance {tol:.0e}", precision.as_str());
        assert!(worst <= tol, "{}: {got:?} vs f32 {want:?}", precision.as_str());
        assert!(worst > 0.0, "{}: identical to f32, so the step did not compute in half precision", precision.as_str());
        assert!(got[3] < got[0], "{got:?}");
        let mut dtypes = Vec::new();
        burn::module::Module::visit(&model, &mut DTypes(&mut dtypes));
        assert!(!dtypes.is_empty() && dtypes.iter().all(|t| *t == DType::F32), "master weights must stay f32: {dtypes:?}");
    }
}

/// Collects the dtype of every float parameter.
struct DTypes<'a>(&'a mut Vec<DType>);

impl<Bk: burn::tensor::backend::Backend> burn::module::ModuleVisitor<Bk> for DTypes<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<Bk, D>>) {
        self.0.push(param.val().dtype());
    }
}
