//! The goldens live with clex-models' tests (one copy in the repo); this crate reads them
//! from there, and moves tensors between the host and any backend.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clex_models::weights::Checkpoint;

/// A file under `clex-models/tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures").join(rel)
}

/// A golden safetensors file (read on the host).
pub fn golden(rel: &str) -> Checkpoint {
    Checkpoint::open(&[fixture(rel)]).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Token ids stored as f32 in the goldens → `[1, n]` on `device`.
pub(crate) fn ids<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), device)
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
