//! Helpers of the model golden tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Int, Tensor, TensorData};
use clex_models::weights::Weights;
use clex_models::{CausalLm, ModelError, ModelSource};

pub type B = burn::backend::Flex;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn golden(rel: &str) -> Weights {
    Weights::open(&[fixture(rel)]).unwrap()
}

pub fn load(config: &str, weights: &str) -> CausalLm<B> {
    ModelSource::from_files(&fixture(config), &[fixture(weights)])
        .and_then(|s| s.load::<B>(&Default::default(), DType::F32))
        .unwrap_or_else(|e| panic!("loading {config}: {e}"))
}

/// `path` (HF directory or GGUF file) in f32 on the default device.
pub fn load_path(path: &Path) -> Result<CausalLm<B>, ModelError> {
    ModelSource::open(path)?.load::<B>(&Default::default(), DType::F32)
}

pub fn ids(values: &[f32]) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// max |a − b|, asserting it is within `tol`.
pub fn check(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    assert!(worst.0 <= tol, "{what}: max |diff| {:e} at {} (got {}, want {}) > {tol:e}", worst.0, worst.1, got[worst.1], want[worst.1]);
    worst.0
}
