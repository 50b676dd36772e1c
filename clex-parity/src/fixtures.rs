//! The goldens live with clex-models' tests (one copy in the repo); this crate reads them
//! from there, and moves tensors between the host and any backend.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use clex_models::session::token_tensor;
use clex_models::weights::Weights;

/// A file under `clex-models/tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures").join(rel)
}

/// A golden safetensors file (read on the host).
pub fn golden(rel: &str) -> Weights {
    Weights::open(&[fixture(rel)]).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Token ids stored as f32 in the goldens, as ids.
pub(crate) fn token_ids(values: &[f32]) -> Vec<u32> {
    values.iter().map(|&x| x as u32).collect()
}

/// Token ids stored as f32 in the goldens → `[1, n]` on `device`.
pub(crate) fn ids<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 2, Int> {
    token_tensor(&token_ids(values), device)
}

/// Any float tensor (f32, f16, bf16) as host f32 values.
pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 after convert")
}

/// max |a − b| (NaN counts as infinitely wrong).
pub(crate) fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length {} vs {}", got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// The backend the wgpu checks run on: the one clex-models picks for `--features wgpu`,
/// wgpu without burn's fusion layer.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn_wgpu::CubeBackend<burn_wgpu::WgpuRuntime, f32, i32, u32>;

/// The default wgpu adapter, or None (with the reason printed) when there is none. Without an
/// adapter the wgpu tests print why and pass, unless `CLEX_REQUIRE_WGPU=1` (set by `.ci/run`,
/// which installs lavapipe) makes that a failure.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Option<burn_wgpu::WgpuDevice> {
    let d = burn_wgpu::WgpuDevice::DefaultDevice;
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| burn::tensor::Tensor::<Wgpu, 1>::ones([4], &d).sum().into_data()));
    if probe.is_ok() {
        return Some(d);
    }
    let required = std::env::var("CLEX_REQUIRE_WGPU").as_deref() == Ok("1");
    assert!(!required, "CLEX_REQUIRE_WGPU=1 but wgpu found no adapter (install mesa-vulkan-drivers libvulkan1)");
    eprintln!("skipping: wgpu found no adapter; install mesa-vulkan-drivers libvulkan1 (lavapipe) or run on a GPU");
    None
}
