//! The training half of the backend parity suite (clex-parity holds the inference half): a
//! few CLEX train steps on the tiny CLEX-LLaMA lower the loss on flex, half precision tracks
//! f32 there, and wgpu gives flex's losses. libtorch: `tests/backends_tch.rs`.

mod common;

use burn::tensor::DType;
use clex_train::precision::Precision;
use common::AD;
use common::parity::{train_losses, train_run};

mod flex {
    use super::*;

    #[test]
    fn train_steps_lower_the_loss() {
        let losses = train_losses::<AD>(&Default::default(), 4);
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
        let (want, _) = train_run::<AD>(&d, 4, Precision::F32);
        for (precision, tol) in [(Precision::F16, 5e-3), (Precision::Bf16, 2e-2)] {
            let (got, model) = train_run::<AD>(&d, 4, precision);
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
}

/// On a machine without a GPU wgpu is Mesa's lavapipe (software Vulkan;
/// `apt-get install mesa-vulkan-drivers libvulkan1`), which has f32 and f16 but not bf16.
/// Without any Vulkan/Metal/DX12 adapter the tests print why and pass, unless
/// `CLEX_REQUIRE_WGPU=1` (set by `.ci/run`, which installs lavapipe) makes that a failure.
/// The backend is the one clex-train runs on: wgpu without burn's fusion layer.
mod wgpu {
    use super::*;
    use crate::common::parity::check_train_steps_against_flex;
    use clex_parity::Wgpu;

    #[test]
    fn train_steps_match_flex() {
        let Some(d) = clex_parity::wgpu_device() else { return };
        check_train_steps_against_flex::<burn::backend::Autodiff<Wgpu>>("wgpu", &d, Precision::F32, 1e-4);
    }

    /// Mixed-precision training (f16 compute, f32 master weights and ODE) gives flex's f16
    /// losses (lavapipe has no bf16).
    #[test]
    fn f16_train_steps_match_flex() {
        let Some(d) = clex_parity::wgpu_device() else { return };
        check_train_steps_against_flex::<burn::backend::Autodiff<Wgpu>>("wgpu", &d, Precision::F16, 5e-3);
    }
}
