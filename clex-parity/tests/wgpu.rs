//! The parity suite on wgpu: on a machine without a GPU this is Mesa's lavapipe (software
//! Vulkan; `apt-get install mesa-vulkan-drivers libvulkan1`), which supports f32 and f16 but
//! not bf16. The same tolerances as on flex apply. The training checks on wgpu (a few CLEX
//! train steps give flex's losses): clex-train's `tests/backends.rs`.
//!
//! Without any Vulkan/Metal/DX12 adapter the tests print why and pass, unless
//! `CLEX_REQUIRE_WGPU=1` (set by `.ci/run`, which installs lavapipe) makes that a failure.
//!
//! The backend under test is the one clex-train runs on: wgpu without burn's fusion layer
//! (see `fusion_miscompiles_gpt_neox_decode` below for why).
#![cfg(feature = "wgpu")]

use burn::tensor::DType;
use burn_wgpu::WgpuDevice;
use clex_models::{CachePolicy, Session};
use clex_parity::{Wgpu, report, suite};

/// The default adapter, or None (see [`clex_parity::wgpu_device`]).
fn device() -> Option<WgpuDevice> {
    clex_parity::wgpu_device()
}

#[test]
fn f32_matches_the_goldens() {
    let Some(d) = device() else { return };
    let checks = suite::<Wgpu>(&d, DType::F32, 40);
    report("wgpu f32", &checks);
}

/// f16 decodes 4 steps (N = 31..34, across the t = 1 → 2 re-rotation) rather than flex's
/// 40: lavapipe is slow and the wgpu tests already take most of CI's time.
#[test]
fn f16_matches_the_goldens_within_its_tolerance() {
    let Some(d) = device() else { return };
    let checks = suite::<Wgpu>(&d, DType::F16, 4);
    report("wgpu f16", &checks);
}

/// One decode step after prefills of 47, 40, 63 and 33 tokens, against flex. cubecl 0.10
/// caches a matmul kernel per bucket of cache lengths; its gemv kernels only take lengths
/// that are a multiple of the plane size, so a gemv tuned at 48 cached keys used to panic at
/// 41 (CI, 2026-11-29). The attention now gives cubecl two query rows in a decode step.
#[test]
fn decode_steps_at_any_cache_length_match_flex() {
    let Some(d) = device() else { return };
    let flex = Default::default();
    for arch in ["llama", "gpt_neox"] {
        let cfg = clex_parity::fixture(&format!("hf/{arch}_default.json"));
        let w = [clex_parity::fixture(&format!("hf/{arch}.safetensors"))];
        let ours = clex_models::ModelSource::from_files(&cfg, &w).and_then(|s| s.load::<Wgpu>(&d, DType::F32)).unwrap();
        let reference = clex_models::ModelSource::from_files(&cfg, &w).and_then(|s| s.load::<burn_flex::Flex>(&flex, DType::F32)).unwrap();
        for cached in [47usize, 40, 63, 33] {
            let prompt: Vec<u32> = (0..=cached).map(|i| (i * 37 % 200) as u32).collect();
            let (got, want) = (decode_once(&ours, &prompt), decode_once(&reference, &prompt));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("{arch} decode step at {cached} cached tokens: {worst:.2e}");
            assert!(worst < 1e-4, "{arch} at {cached} cached tokens: {worst:.2e}");
        }
    }
}

/// The logits of the last token of `prompt`, decoded with the rest of it in the cache.
fn decode_once<B: clex_core::ClexBackend>(model: &clex_models::CausalLm<B>, prompt: &[u32]) -> Vec<f32> {
    let (&last, head) = prompt.split_last().expect("a prompt");
    let mut session = Session::new(model, CachePolicy::Reference);
    session.prefill(head).unwrap();
    session.step(last).unwrap()
}

/// burn 0.21's fusion layer over wgpu gets the first decode step of the tiny GPT-NeoX wrong
/// (max |logit diff| 4.2 against flex, already wrong after layer 1; on lavapipe). Isolated
/// so far: the prefill and every full forward are right; the rotary (full or partial), the
/// parallel residual (on or off), linear+bias, LayerNorm, GELU and the cached-attention chain
/// on their own all match flex to < 1e-6; the same model on `CubeBackend` (no fusion) matches
/// flex to 4e-6. Hence clex-train's wgpu backend leaves fusion out. Ignored because it
/// documents an upstream bug: `cargo test -p clex-parity --test wgpu -- --ignored --nocapture`.
#[test]
#[ignore]
fn fusion_miscompiles_gpt_neox_decode() {
    let Some(d) = device() else { return };
    let cfg = clex_parity::fixture("hf/gpt_neox_default.json");
    let w = [clex_parity::fixture("hf/gpt_neox.safetensors")];
    let prompt: Vec<u32> = (0..31).map(|i| (i * 37 % 200) as u32).collect();
    let step = |fused: bool| -> Vec<f32> {
        fn run<B: clex_core::ClexBackend>(cfg: &std::path::Path, w: &[std::path::PathBuf], d: &B::Device, p: &[u32]) -> Vec<f32> {
            decode_once(&clex_models::ModelSource::from_files(cfg, w).and_then(|s| s.load::<B>(d, DType::F32)).unwrap(), p)
        }
        if fused { run::<burn_wgpu::Wgpu>(&cfg, &w, &d, &prompt) } else { run::<Wgpu>(&cfg, &w, &d, &prompt) }
    };
    let reference = decode_once(
        &clex_models::ModelSource::from_files(&cfg, &w).and_then(|s| s.load::<burn_flex::Flex>(&Default::default(), DType::F32)).unwrap(),
        &prompt,
    );
    let max = |a: &[f32]| a.iter().zip(&reference).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (fused, plain) = (max(&step(true)), max(&step(false)));
    eprintln!("GPT-NeoX decode step vs flex: fused wgpu {fused:.2e}, unfused wgpu {plain:.2e}");
    assert!(plain < 1e-4);
    assert!(fused > 1e-2, "fixed upstream: burn's fusion now gets it right ({fused:.2e}); clex-train could use it again");
}
