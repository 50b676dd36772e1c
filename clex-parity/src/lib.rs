//! clex-parity: one numeric suite, generic over burn's `Backend`, that every backend must
//! pass: the transformers goldens of the tiny LLaMA and GPT-NeoX, the official-CLEX goldens
//! of LLaMA, GPT-NeoX, Phi-2 and Mixtral (full forwards across t boundaries and KV-cache
//! decoding under both cache policies, through [`clex_models::Session`]). `tests/` runs it on flex, wgpu and (opt-in) tch; the same
//! numbers are expected everywhere, within the per-dtype tolerances of [`Tolerance`]. The
//! training half (CLEX train steps on every backend) lives in clex-train's `tests/backends.rs`,
//! so this crate depends on clex-core and clex-models only.

#![warn(missing_docs)]

mod fixtures;
mod suite;

#[cfg(feature = "wgpu")]
pub use fixtures::{Wgpu, wgpu_device};
pub use fixtures::{fixture, golden};
pub use suite::{Check, Tolerance, arch_decode, arch_logits, attention_paths, clex_decode, clex_logits, hf_logits, suite};

/// Prints a suite's checks as a table and asserts each is within its tolerance.
pub fn report(backend: &str, checks: &[Check]) {
    eprintln!("{backend}: {} checks", checks.len());
    for c in checks {
        eprintln!("  {:<44} max |diff| {:.2e}  (tolerance {:.0e})", c.name, c.worst, c.tol);
    }
    // NaN never passes.
    let failed: Vec<&Check> = checks.iter().filter(|c| c.worst.is_nan() || c.worst > c.tol).collect();
    assert!(failed.is_empty(), "{backend}: {} checks over tolerance: {failed:?}", failed.len());
}
