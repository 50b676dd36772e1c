//! Shared helpers of the golden tests: fixture access and tolerance checks that report the
//! worst element.
#![allow(dead_code)]

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

pub type B = burn::backend::Flex;
pub type AD = burn::backend::Autodiff<burn::backend::Flex>;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let p = fixture_path(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// A safetensors fixture held in memory.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(name: &str) -> Self {
        let p = fixture_path(name);
        Fixture { bytes: std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.st().names().into_iter().map(|s| s.to_string()).collect();
        n.sort();
        n
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (v, t.shape().to_vec())
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

/// Largest |a - b|, its index.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    worst
}

pub fn assert_close_abs(what: &str, got: &[f32], want: &[f32], atol: f32) -> f32 {
    let (d, i) = max_abs_diff(got, want);
    assert!(d <= atol, "{what}: max |diff| {d:e} at {i} (got {}, want {}) > atol {atol:e}", got[i], want[i]);
    d
}

/// max |got - want| / max |want| (the manifest's gradient metric).
pub fn assert_close_rel_to_max(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    let (d, i) = max_abs_diff(got, want);
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    let r = d / scale;
    assert!(r <= tol, "{what}: max |diff| / max |want| = {r:e} (diff {d:e} at {i}: got {}, want {}) > {tol:e}", got[i], want[i]);
    r
}

/// Elementwise relative error max |got - want| / |want|.
pub fn assert_close_rel(what: &str, got: &[f32], want: &[f32], rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let r = (g - w).abs() / w.abs().max(f32::MIN_POSITIVE);
        if r > worst.0 || r.is_nan() {
            worst = (r, i);
        }
    }
    let (r, i) = worst;
    assert!(r <= rtol, "{what}: max rel diff {r:e} at {i} (got {}, want {}) > {rtol:e}", got[i], want[i]);
    r
}

pub fn to_vec<const D: usize, Bk: burn::tensor::backend::Backend>(t: burn::tensor::Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The inference frequencies of a rope config with no CLEX layer, read back to the host.
pub struct HostFrequencies {
    pub inv_freq: Vec<f32>,
    pub attention_scaling: f32,
}

/// [`clex_core::frequencies`] for `n` tokens without a CLEX layer, on the host.
pub fn host_frequencies(cfg: &clex_core::RopeConfig, n: usize) -> HostFrequencies {
    let f = clex_core::frequencies::<B>(cfg, None, n, &Default::default());
    HostFrequencies { inv_freq: to_vec(f.inv_freq), attention_scaling: f.attention_scaling }
}
