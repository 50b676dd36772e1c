//! Every HF rope table in `fixtures/rope_tables.safetensors` (transformers 5.24, f32):
//! inv_freq, attention_scaling, cos and sin for default / linear / dynamic / yarn, full and
//! partial rotary, and the LLaMA-7B geometry at positions up to 16383.
//!
//! Tolerances: inv_freq 1e-6 relative (f32 pow may differ by an ulp: torch uses SLEEF's
//! vectorised powf), attention_scaling 1e-6. cos/sin built from HF's own inv_freq: 1e-5
//! absolute at every position, 0..16383 (the angle is the same single f32 product m·θ in
//! both, so even far positions agree to cos/sin rounding, ~1e-7 measured). cos/sin built
//! end to end from our inv_freq: 1e-5 + m·(max|Δθ| + 2.4e-7) (an ulp of θ turns into m ulps of
//! angle, and the two roundings of m·θ then no longer coincide; this only matters for dynamic NTK, whose base is recomputed with pow).

mod common;

use burn::tensor::{Tensor, TensorData};
use clex_core::RopeConfig;
use clex_core::rope::cos_sin;
use common::*;
use serde_json::json;

fn config_for(entry: &serde_json::Value) -> RopeConfig {
    let rp = entry["rope_parameters"].clone();
    let partial = rp.get("partial_rotary_factor").and_then(|v| v.as_f64()).unwrap_or(1.0);
    let rotary = entry["rotary_dim"].as_u64().unwrap() as f64;
    let cfg = json!({
        "head_dim": (rotary / partial).round() as u64,
        "max_position_embeddings": entry["max_position_embeddings"],
        "rope_parameters": rp,
    });
    RopeConfig::from_hf_json(&cfg).unwrap()
}

/// HF's cos/sin rows of table `key`: at every position below `seq_len`, or at the stored
/// `positions` where the fixture keeps only a few (`cos_at` / `sin_at`). Returns the
/// positions and the `[positions, rotary_dim]` cos and sin.
fn reference_rows(fx: &Fixture, key: &str, seq_len: usize, rotary_dim: usize) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
    let positions: Vec<i64> =
        if fx.has(&format!("{key}/positions")) { fx.i64(&format!("{key}/positions")) } else { (0..seq_len as i64).collect() };
    let suffix = if fx.has(&format!("{key}/cos_at")) { "_at" } else { "" };
    let (want_cos, shape) = fx.f32(&format!("{key}/cos{suffix}"));
    let (want_sin, _) = fx.f32(&format!("{key}/sin{suffix}"));
    assert_eq!(shape, vec![positions.len(), rotary_dim], "{key}");
    (positions, want_cos, want_sin)
}

/// Our cos/sin rows at `positions` from `inv_freq` and the attention scaling.
fn our_rows(positions: &[i64], inv_freq: &[f32], scaling: f32) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let pos_f: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
    let (n, k) = (pos_f.len(), inv_freq.len());
    let (cos, sin) = cos_sin::<B>(
        Tensor::from_data(TensorData::new(pos_f, [n]), &device),
        Tensor::from_data(TensorData::new(inv_freq.to_vec(), [k]), &device),
        scaling,
    );
    (to_vec(cos), to_vec(sin))
}

#[test]
fn every_hf_rope_table_matches() {
    let fx = Fixture::open("rope_tables.safetensors");
    let manifest = read_json("rope_tables.json");
    let tables = manifest["rope_tables"].as_object().unwrap();
    assert_eq!(tables.len(), 48, "fixture should hold 48 tables");
    let mut checked = 0;
    let mut worst_near = 0.0f32;
    let mut worst_far = 0.0f32;
    for (key, entry) in tables {
        let cfg = config_for(entry);
        let seq_len: usize = key.rsplit('/').next().unwrap()[1..].parse().unwrap();
        let freqs = host_frequencies(&cfg, seq_len);
        let (want_inv, _) = fx.f32(&format!("{key}/inv_freq"));
        assert_close_rel(&format!("{key}/inv_freq"), &freqs.inv_freq, &want_inv, 1e-6);
        let (want_scale, _) = fx.f32(&format!("{key}/attention_scaling"));
        assert!(
            (freqs.attention_scaling - want_scale[0]).abs() <= 1e-6,
            "{key}: attention_scaling {} vs {}",
            freqs.attention_scaling,
            want_scale[0]
        );
        assert!((want_scale[0] as f64 - entry["attention_scaling"].as_f64().unwrap()).abs() < 1e-6);

        let (positions, want_cos, want_sin) = reference_rows(&fx, key, seq_len, cfg.rotary_dim);
        let k = freqs.inv_freq.len();
        let dtheta = freqs.inv_freq.iter().zip(&want_inv).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        for (source, inv, extra) in [("HF inv_freq", &want_inv, 0.0f32), ("our inv_freq", &freqs.inv_freq, dtheta)] {
            let (cos, sin) = our_rows(&positions, inv, freqs.attention_scaling);
            let width = 2 * k;
            for (r, &m) in positions.iter().enumerate() {
                let tol = if extra == 0.0 { 1e-5 } else { 1e-5 + m as f32 * (extra + 2.4e-7) };
                let row = r * width..(r + 1) * width;
                let what = format!("{key} ({source}) row m={m}");
                let dc = assert_close_abs(&format!("{what} cos"), &cos[row.clone()], &want_cos[row.clone()], tol);
                let ds = assert_close_abs(&format!("{what} sin"), &sin[row.clone()], &want_sin[row], tol);
                if extra == 0.0 {
                    if m <= 1024 {
                        worst_near = worst_near.max(dc.max(ds));
                    } else {
                        worst_far = worst_far.max(dc.max(ds));
                    }
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 48);
    eprintln!("rope tables from HF inv_freq: worst |diff| {worst_near:e} (m <= 1024), {worst_far:e} (m > 1024)");
}

/// Dynamic NTK depends on the current length: at or below P it is plain RoPE, above it the
/// base grows, and longer inputs give strictly lower frequencies (except θ_0 = 1).
#[test]
fn dynamic_ntk_depends_on_length() {
    let cfg = RopeConfig::from_hf_json(&json!({
        "head_dim": 16, "max_position_embeddings": 128,
        "rope_scaling": {"type": "dynamic", "factor": 4.0}
    }))
    .unwrap();
    let base = host_frequencies(&cfg, 1).inv_freq;
    assert_eq!(host_frequencies(&cfg, 128).inv_freq, base);
    let f256 = host_frequencies(&cfg, 256).inv_freq;
    let f512 = host_frequencies(&cfg, 512).inv_freq;
    assert_eq!(f256[0], 1.0);
    for i in 1..base.len() {
        assert!(f256[i] < base[i] && f512[i] < f256[i], "i={i}: {} {} {}", base[i], f256[i], f512[i]);
    }
}

/// Llama 3.1 and LongRoPE tables from `fixtures/rope_tables_extra.safetensors`
/// (`scripts/goldens/make_extra_goldens.py`: transformers 5.24's own rotary modules, a fresh one
/// per length, so LongRoPE switches from `short_factor` to `long_factor` exactly as HF does
/// once the length passes `original_max_position_embeddings`). Covers tiny LLaMA and
/// partial-rotary GPT-NeoX configs (llama3 with frequencies in all three bands; longrope at
/// 64, 128 = P_orig, 129 and 256 tokens, also with explicit `factor` / `attention_factor`), the
/// Llama-3.1-8B geometry (θ = 5e5, factor 8, P_orig 8192) and a Phi-3-mini-128k-like LongRoPE
/// (head_dim 96, P_orig 4096, P 131072, seeded factors) at positions up to 131071.
///
/// Tolerances (measured against this fixture): inv_freq 1e-6 relative (measured 9.5e-8: every
/// θ is bit-identical except one of the 48 Phi-3 frequencies, 1 ulp off through f32 powf);
/// attention scaling exact (measured 0). cos/sin are built end to end from our θ and scaling,
/// with fixed bounds (not ones that grow with our own θ error): 1.2e-6 in the tiny tables
/// (positions < 512; measured 1.2e-7, 10x margin) and 1.5e-4 in the Llama-3.1 / Phi-3 tables
/// (positions to 131071; measured 1.5e-5 at m = 131071 and 9.1e-6 at m = 4095, from the one
/// Phi-3 θ that is 1 ulp off, times m; 10x margin). A 1e-6 relative θ error moves the angle at
/// m = 131071 by ~0.1 and fails them.
#[test]
fn llama3_and_longrope_tables_match_transformers() {
    let fx = Fixture::open("rope_tables_extra.safetensors");
    let manifest = read_json("rope_tables_extra.json");
    let tables = manifest["rope_tables"].as_object().unwrap();
    assert_eq!(tables.len(), 16, "fixture should hold 16 tables");
    let (mut worst_inv, mut worst_tiny, mut worst_large) = (0.0f32, 0.0f32, 0.0f32);
    for (key, entry) in tables {
        let cfg = config_for(entry);
        let kind = entry["rope_parameters"]["rope_type"].as_str().unwrap();
        assert_eq!(cfg.scaling.kind(), kind, "{key}");
        let seq_len: usize = key.rsplit('/').next().unwrap()[1..].parse().unwrap();
        let freqs = host_frequencies(&cfg, seq_len);
        let (want_inv, _) = fx.f32(&format!("{key}/inv_freq"));
        worst_inv = worst_inv.max(assert_close_rel(&format!("{key}/inv_freq"), &freqs.inv_freq, &want_inv, 1e-6));
        let (want_scale, _) = fx.f32(&format!("{key}/attention_scaling"));
        assert_eq!(freqs.attention_scaling, want_scale[0], "{key}: attention_scaling");
        assert!((want_scale[0] as f64 - entry["attention_scaling"].as_f64().unwrap()).abs() < 1e-6);
        // Tiny tables: the 128/4-dim test models at positions < 512; large: the 8B-class geometries.
        let tiny = key.contains("_tiny/");
        let tol = if tiny { 1.2e-6 } else { 1.5e-4 };

        let (positions, want_cos, want_sin) = reference_rows(&fx, key, seq_len, cfg.rotary_dim);
        let k = freqs.inv_freq.len();
        let (cos, sin) = our_rows(&positions, &freqs.inv_freq, freqs.attention_scaling);
        for (r, &m) in positions.iter().enumerate() {
            let row = r * 2 * k..(r + 1) * 2 * k;
            let what = format!("{key} row m={m}");
            let dc = assert_close_abs(&format!("{what} cos"), &cos[row.clone()], &want_cos[row.clone()], tol);
            let ds = assert_close_abs(&format!("{what} sin"), &sin[row.clone()], &want_sin[row], tol);
            let worst = if tiny { &mut worst_tiny } else { &mut worst_large };
            *worst = worst.max(dc.max(ds));
        }
    }

    // The goldens exercise what they are for: llama3 frequencies in all three bands (kept,
    // divided by the factor, smoothed between), and LongRoPE on both sides of its switch.
    let (tiny, _) = fx.f32("llama_tiny/llama3/L64/inv_freq");
    let base = clex_core::rope::base_inv_freq(10000.0, 16);
    let kept = tiny.iter().zip(&base).filter(|(t, b)| t == b).count();
    let divided = tiny.iter().zip(&base).filter(|(t, b)| **t == **b / 4.0).count();
    assert!(
        kept >= 1 && divided >= 1 && kept + divided <= tiny.len() - 2,
        "llama3 bands: {kept} kept, {divided} divided of {}",
        tiny.len()
    );
    for prefix in ["llama_tiny/longrope", "llama_tiny/longrope_explicit", "gpt_neox_tiny/longrope"] {
        let (short, _) = fx.f32(&format!("{prefix}/L128/inv_freq"));
        let (long, _) = fx.f32(&format!("{prefix}/L129/inv_freq"));
        assert!(short.iter().zip(&long).all(|(s, l)| s != l), "{prefix}: short and long factors give the same θ");
    }
    eprintln!(
        "llama3/longrope tables: inv_freq max rel {worst_inv:e}; cos/sin max |diff| {worst_tiny:e} tiny (tol 1.2e-6), {worst_large:e} large (tol 1.5e-4)"
    );
}
