//! The official CLEX code's outputs for its Phi-2 and Mixtral classes (transformers 4.36.2 +
//! CLEX @ 023709d, f32; `fixtures/clex_arch`, see `fixtures/README.md`): tiny CLEX-Phi-2
//! (partial rotary 0.4, one LayerNorm, parallel residual, lm_head bias) and CLEX-Mixtral (GQA,
//! 4 experts, top-2), P = 32, T_max = 8. Logits at lengths crossing t = 1, 2, 4, 8, hidden
//! states, the θ table, the CLEX cos/sin pack, Mixtral's router logits, and KV-cache decoding
//! (prefill 30, 40 steps across t boundaries) under both cache policies.
//!
//! Tolerances are the manifest's `suggested_tolerances` (2e-3 absolute on logits, hidden
//! states, decode steps and router logits; 1e-4 relative on θ); each test prints its worst
//! error. Every length and hidden state the manifest lists is checked and counted.

mod common;

use burn::tensor::{Int, Tensor};
use clex_core::frequencies;
use clex_models::{CachePolicy, CausalLm, ForwardOptions};
use common::*;

const ARCHS: [&str; 2] = ["phi2", "mixtral"];

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("clex_arch/arch_manifest.json")).unwrap()).unwrap()
}

/// A suggested tolerance of the manifest.
fn tol(m: &serde_json::Value, key: &str) -> f32 {
    m["suggested_tolerances"]["suggested"][key].as_f64().unwrap_or_else(|| panic!("manifest tolerance {key}")) as f32
}

fn model(arch: &str) -> CausalLm<B> {
    load(&format!("clex_arch/{arch}_clex.json"), &format!("clex_arch/{arch}_clex.safetensors"))
}

/// The lengths with full-forward results (N = 300 records the reference's exception).
fn lens(m: &serde_json::Value, arch: &str) -> Vec<usize> {
    let results = m[arch]["results"].as_object().unwrap();
    let mut lens: Vec<usize> =
        results.iter().filter(|(k, v)| k.starts_with('L') && v.get("shape").is_some()).map(|(k, _)| k[1..].parse().unwrap()).collect();
    lens.sort();
    lens
}

#[test]
fn configs_read_as_the_official_classes_do() {
    let phi = model("phi2");
    let c = phi.config();
    assert_eq!((c.arch.model_type(), c.head_dim, c.rope.rotary_dim, c.num_kv_heads), ("phi", 20, 8, 4));
    assert!(c.use_parallel_residual && c.attention_bias && c.mlp_bias && c.moe.is_none());
    assert!(phi.layers.iter().all(|l| l.post_norm.is_none()), "Phi-2 has one LayerNorm per block");
    assert!(phi.lm_head.as_ref().unwrap().bias.is_some(), "Phi-2's lm_head has a bias");
    let mix = model("mixtral");
    let c = mix.config();
    assert_eq!((c.arch.model_type(), c.head_dim, c.rope.rotary_dim, c.num_kv_heads), ("mixtral", 16, 16, 2));
    let moe = c.moe.unwrap();
    assert_eq!((moe.num_experts, moe.experts_per_token, moe.router_aux_loss_coef), (4, 2, 0.02));
    assert_eq!((c.sliding_window, c.rope.theta), (None, 1e6));
}

#[test]
fn full_forwards_match_at_every_length() {
    let g = golden("clex_arch/arch_logits.safetensors");
    let (all_ids, _) = g.read_f32("inputs/ids").unwrap();
    let m = manifest();
    let (tol_logits, tol_hidden) = (tol(&m, "logits_abs"), tol(&m, "hidden_states_abs"));
    for arch in ARCHS {
        let model = model(arch);
        let layers = model.config().num_layers;
        let lens = lens(&m, arch);
        assert_eq!(lens, [20, 32, 33, 64, 100, 256], "{arch}: manifest lengths");
        let hidden_lens: Vec<usize> =
            m[arch]["hidden_state_lens"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as usize).collect();
        let (mut worst_logits, mut worst_hidden, mut hidden_checked) = (0.0f32, 0.0f32, 0);
        for &len in &lens {
            let out =
                model.forward_with(ids(&all_ids[..len]), None, &ForwardOptions { hidden_states: true, ..Default::default() }).unwrap();
            let t = out.scaling_factor.unwrap().t;
            assert_eq!(t as u64, m[arch]["results"][format!("L{len}")]["t"].as_u64().unwrap(), "{arch} L{len}: t");
            let key = format!("{arch}/L{len}");
            let (want, _) = g.read_f32(&format!("{key}/logits")).unwrap();
            worst_logits = worst_logits.max(check(&format!("{key} logits"), &values(out.logits), &want, tol_logits));
            assert_eq!(out.hidden_states.len(), layers + 1);
            for (i, h) in out.hidden_states.into_iter().enumerate() {
                match g.read_f32(&format!("{key}/hidden.{i}")) {
                    Ok((want, _)) => {
                        worst_hidden = worst_hidden.max(check(&format!("{key} hidden.{i}"), &values(h), &want, tol_hidden));
                        hidden_checked += 1;
                    }
                    Err(_) => assert!(!hidden_lens.contains(&len), "{key}/hidden.{i} listed but missing"),
                }
            }
        }
        assert_eq!(hidden_checked, hidden_lens.len() * (layers + 1), "{arch}: hidden states checked");
        eprintln!("{arch}: {} lengths; max abs error logits {worst_logits:.2e}, hidden states {worst_hidden:.2e}", lens.len());
    }
}

/// θ(t) for t = 2..8 (row 0 is not used: t = 1 is `inv_freq`), and the cos/sin pack every
/// layer uses at N = 20 and 100.
#[test]
fn theta_table_and_clex_pack_match() {
    let g = golden("clex_arch/arch_logits.safetensors");
    let m = manifest();
    let tol_theta = tol(&m, "theta_table_rel");
    for arch in ARCHS {
        let model = model(arch);
        let clex = model.clex_layer.as_ref().unwrap();
        let (table, shape) = g.read_f32(&format!("{arch}/theta_table")).unwrap();
        let k = shape[1];
        let mut worst = 0.0f32;
        for t in 2..=shape[0] {
            let got = values(clex.theta(t));
            for (a, b) in got.iter().zip(&table[(t - 1) * k..t * k]) {
                worst = worst.max((a - b).abs() / b.abs());
            }
        }
        assert!(worst <= tol_theta, "{arch}: θ table max rel error {worst:e} > {tol_theta:e}");
        let mut worst_pack = 0.0f32;
        for n in [20usize, 100] {
            let f = frequencies(model.rope(), Some(clex), n, &Default::default());
            let (cos, sin) = model.rotary_tables((0..n).map(|p| p as f32).collect(), 1, f.inv_freq, f.attention_scaling);
            for (name, got) in [("clex_cos", cos), ("clex_sin", sin)] {
                let (want, _) = g.read_f32(&format!("{arch}/L{n}/{name}")).unwrap();
                worst_pack = worst_pack.max(check(&format!("{arch} L{n} {name}"), &values(got), &want, tol(&m, "logits_abs")));
            }
        }
        eprintln!("{arch}: θ table max rel error {worst:.2e}; cos/sin pack max abs error {worst_pack:.2e}");
    }
}

/// Mixtral's pre-softmax router logits of each layer at N = 20 and 100, from a forward at
/// the integer positions of inference (the training forward with inference tables).
#[test]
fn router_logits_match() {
    let g = golden("clex_arch/arch_logits.safetensors");
    let (all_ids, _) = g.read_f32("inputs/ids").unwrap();
    let m = manifest();
    let model = model("mixtral");
    let mut worst = 0.0f32;
    for n in [20usize, 100] {
        let f = frequencies(model.rope(), model.clex_layer.as_ref(), n, &Default::default());
        let (cos, sin) = model.rotary_tables((0..n).map(|p| p as f32).collect(), 1, f.inv_freq, f.attention_scaling);
        let tokens: Tensor<B, 2, Int> = ids(&all_ids[..n]);
        let (logits, router) = model.forward_rotary_routed(tokens.clone(), cos, sin);
        assert_eq!(router.len(), 2, "one router per layer");
        // The routed forward is the inference forward.
        let full = values(model.forward(tokens).unwrap());
        check(&format!("mixtral L{n} routed forward vs forward"), &values(logits), &full, 1e-5);
        for (i, r) in router.into_iter().enumerate() {
            assert_eq!(r.dims(), [n, 4]);
            let (want, _) = g.read_f32(&format!("mixtral/L{n}/router_logits.{i}")).unwrap();
            worst = worst.max(check(&format!("mixtral L{n} router_logits.{i}"), &values(r), &want, tol(&m, "router_logits_abs")));
        }
    }
    eprintln!("mixtral: router logits max abs error {worst:.2e}");
}

/// Prefill 30 tokens, then 40 single-token steps (N = 31..70, t = 1 → 2 → 3), under the
/// official cache rule (Reference: `step_logits`) and full recompute (Recompute:
/// `full_recompute_last_logits`).
#[test]
fn decode_matches_both_cache_policies() {
    let g = golden("clex_arch/arch_logits.safetensors");
    let m = manifest();
    let tol_decode = tol(&m, "decode_step_logits_abs");
    for arch in ARCHS {
        let model = model(arch);
        let (input, _) = g.read_f32(&format!("{arch}/decode/input_ids")).unwrap();
        let (prefill_want, _) = g.read_f32(&format!("{arch}/decode/prefill_logits")).unwrap();
        let (steps_t, _) = g.read_f32(&format!("{arch}/decode/step_t")).unwrap();
        for (policy, key) in [(CachePolicy::Reference, "step_logits"), (CachePolicy::Recompute, "full_recompute_last_logits")] {
            let (want, _) = g.read_f32(&format!("{arch}/decode/{key}")).unwrap();
            let mut cache = model.new_cache(policy);
            let out = model.forward_with(ids(&input[..30]), Some(&mut cache), &ForwardOptions::default()).unwrap();
            let mut worst = check(&format!("{arch} prefill"), &values(out.logits), &prefill_want, tol_decode);
            for s in 0..40 {
                let out = model.forward_with(ids(&input[30 + s..31 + s]), Some(&mut cache), &ForwardOptions::default()).unwrap();
                assert_eq!(out.scaling_factor.unwrap().t as f32, steps_t[s], "{arch} step {s}: t");
                let row = &want[s * 256..(s + 1) * 256];
                worst = worst.max(check(&format!("{arch} {policy:?} step {s}"), &values(out.logits), row, tol_decode));
            }
            let stats = cache.stats();
            match policy {
                CachePolicy::Reference => assert_eq!((stats.rerotations, stats.recomputes), (2, 0)),
                CachePolicy::Recompute => assert_eq!((stats.rerotations, stats.recomputes, stats.recomputed_tokens), (0, 2, 33 + 65)),
            }
            eprintln!("{arch} {policy:?}: max abs error over prefill and 40 decode steps {worst:.2e}; {stats:?}");
        }
    }
}
