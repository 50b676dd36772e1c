//! Parsing rope settings from HF `config.json` in every spelling, and every error path.

mod common;

use clex_core::config::{ClexParams, RopeScaling};
use clex_core::{ClexAct, ConfigError, RopeConfig};
use common::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<RopeConfig, ConfigError> {
    RopeConfig::from_hf_json(&v)
}

fn config_file(name: &str) -> RopeConfig {
    let text = std::fs::read_to_string(fixture_path(&format!("configs/{name}.json"))).unwrap();
    RopeConfig::from_hf_str(&text).unwrap()
}

#[test]
fn transformers5_and_legacy_spellings_agree() {
    for arch in ["llama", "gpt_neox"] {
        for kind in ["default", "linear", "dynamic", "yarn"] {
            let v5 = config_file(&format!("{arch}_{kind}"));
            let legacy = config_file(&format!("{arch}_{kind}_legacy"));
            assert_eq!(v5, legacy, "{arch}_{kind}");
            assert_eq!(v5.scaling.kind(), kind);
            assert_eq!(v5.max_position_embeddings, 128);
            assert_eq!(v5.head_dim, 16);
            assert_eq!(v5.rotary_dim, if arch == "gpt_neox" { 4 } else { 16 });
        }
    }
    let y = config_file("llama_yarn");
    match y.scaling {
        RopeScaling::Yarn(p) => {
            assert_eq!((p.factor, p.original_max_position_embeddings, p.beta_fast, p.beta_slow, p.truncate), (4.0, 128, 32.0, 1.0, true));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn clex_checkpoint_configs() {
    let want = RopeScaling::Clex(ClexParams { max_factor: 8, param_factor: 1, act: ClexAct::Tanh, time_dt: 0.01 });
    let l = config_file("llama_clex");
    assert_eq!((l.scaling.clone(), l.rotary_dim, l.max_position_embeddings, l.theta), (want.clone(), 16, 32, 10000.0));
    let n = config_file("gpt_neox_clex");
    assert_eq!((n.scaling, n.rotary_dim, n.head_dim), (want, 4, 16));
    // The released CLEX-7B-16K block (dummy factor, silu).
    let c = parse(json!({
        "hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": {"max_factor": 16, "param_factor": 1, "type": "clex", "factor": 1, "act": "silu", "time_dt": 0.01}
    }))
    .unwrap();
    assert_eq!(c.scaling, RopeScaling::Clex(ClexParams { max_factor: 16, param_factor: 1, act: ClexAct::Silu, time_dt: 0.01 }));
    assert_eq!(c.rotary_dim, 128);
    // Phi-2 style partial rotary.
    let phi = parse(json!({
        "hidden_size": 2560, "num_attention_heads": 32, "max_position_embeddings": 2048, "partial_rotary_factor": 0.4,
        "rope_scaling": {"type": "clex", "max_factor": 64, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1}
    }))
    .unwrap();
    assert_eq!((phi.head_dim, phi.rotary_dim), (80, 32));
    // 100 · 0.58 is 57.99999999999999 in f64: truncating it (transformers' int()) would
    // lose a dim and give an odd count; a product within float error of a whole number is it.
    let odd = parse(json!({"head_dim": 100, "max_position_embeddings": 2048, "partial_rotary_factor": 0.58})).unwrap();
    assert_eq!(odd.rotary_dim, 58);
    // The factor re-derived from the dims (as a rope override writes it back) gives them again.
    let again = parse(json!({"head_dim": 100, "max_position_embeddings": 2048, "partial_rotary_factor": 58.0 / 100.0})).unwrap();
    assert_eq!(again.rotary_dim, 58);
}

#[test]
fn other_spellings() {
    // rope_type inside rope_scaling (transformers 4.4x), theta inside rope_parameters.
    let a = parse(json!({"head_dim": 64, "max_position_embeddings": 2048, "rope_theta": 5e5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
    .unwrap();
    assert_eq!((a.theta, a.scaling.kind()), (5e5, "llama3"));
    let b = parse(json!({"head_dim": 64, "max_position_embeddings": 2048, "rope_theta": 1.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}))
    .unwrap();
    assert_eq!(b.theta, 1e6, "rope_parameters.rope_theta wins");
    // GPT-NeoX legacy keys.
    let c = parse(json!({"hidden_size": 512, "num_attention_heads": 8, "max_position_embeddings": 2048, "rotary_emb_base": 50000, "rotary_pct": 0.25}))
    .unwrap();
    assert_eq!((c.theta, c.rotary_dim, c.scaling.kind()), (50000.0, 16, "default"));
    // rope_scaling: null is plain RoPE; no theta at all defaults to 10000.
    let d = parse(json!({"head_dim": 8, "max_position_embeddings": 16, "rope_scaling": null})).unwrap();
    assert_eq!((d.theta, d.scaling), (10000.0, RopeScaling::Default));
    // Phi-3 LongRoPE with original_max_position_embeddings at the top level.
    let e = parse(json!({"head_dim": 8, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1], "long_factor": [1, 2, 4, 8]}}))
    .unwrap();
    let f_short = host_frequencies(&e, 4096);
    let f_long = host_frequencies(&e, 4097);
    assert_eq!(f_long.inv_freq[3] * 8.0, f_short.inv_freq[3]);
    assert!((f_long.attention_scaling as f64 - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-6);
}

fn err(v: serde_json::Value) -> String {
    parse(v).unwrap_err().to_string()
}

#[test]
fn every_error_names_the_key_and_the_accepted_values() {
    let base = |rs: serde_json::Value| json!({"head_dim": 16, "max_position_embeddings": 32, "rope_scaling": rs});
    let e = err(base(json!({"type": "ntk-by-parts"})));
    assert!(
        e.contains("rope_scaling.type")
            && e.contains("ntk-by-parts")
            && e.contains("default, linear, dynamic, yarn, llama3, longrope, clex"),
        "{e}"
    );
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32, "rope_parameters": {"rope_type": "su"}}));
    assert!(e.contains("rope_parameters.rope_type") && e.contains("clex"), "{e}");
    let e = err(base(json!({"type": 3})));
    assert!(e.contains("rope_scaling.type") && e.contains("clex"), "{e}");
    for kind in ["linear", "dynamic", "yarn", "llama3"] {
        let e = err(base(json!({"type": kind})));
        assert!(e.contains("rope_scaling.factor") && e.contains("missing"), "{kind}: {e}");
    }
    let e = err(base(json!({"type": "linear", "factor": -2})));
    assert!(e.contains("rope_scaling.factor") && e.contains("> 0"), "{e}");
    let e = err(base(json!({"type": "linear", "factor": "4"})));
    assert!(e.contains("rope_scaling.factor") && e.contains("\"4\""), "{e}");
    let e = err(base(json!({"type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4})));
    assert!(e.contains("rope_scaling.original_max_position_embeddings"), "{e}");
    let e = err(base(
        json!({"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1, 1, 1, 1, 1, 1, 1], "original_max_position_embeddings": 4}),
    ));
    assert!(e.contains("rope_scaling.short_factor") && e.contains("list of 8 numbers"), "{e}");
    let e = err(base(json!({"type": "yarn", "factor": 4, "truncate": "yes"})));
    assert!(e.contains("rope_scaling.truncate") && e.contains("true, false"), "{e}");

    let clex = |drop: &str| {
        let mut rs = json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1});
        rs.as_object_mut().unwrap().remove(drop);
        err(base(rs))
    };
    let e = clex("max_factor");
    assert!(e.contains("rope_scaling.max_factor") && e.contains("integer >= 1"), "{e}");
    let e = clex("param_factor");
    assert!(e.contains("rope_scaling.param_factor"), "{e}");
    let e = clex("act");
    assert!(e.contains("rope_scaling.act") && e.contains("tanh, silu"), "{e}");
    let e = clex("time_dt");
    assert!(e.contains("rope_scaling.time_dt"), "{e}");
    let e = err(base(json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "gelu", "time_dt": 0.01})));
    assert!(e.contains("rope_scaling.act") && e.contains("\"gelu\"") && e.contains("tanh, silu"), "{e}");
    let e = err(base(json!({"type": "clex", "max_factor": 0, "param_factor": 1, "act": "tanh", "time_dt": 0.01})));
    assert!(e.contains("rope_scaling.max_factor"), "{e}");
    let e = err(base(json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 0})));
    assert!(e.contains("rope_scaling.time_dt") && e.contains("(0, 1]"), "{e}");
    let e = err(base(json!({"type": "clex", "max_factor": 2.5, "param_factor": 1, "act": "tanh", "time_dt": 0.01})));
    assert!(e.contains("rope_scaling.max_factor") && e.contains("2.5"), "{e}");

    let e = err(json!({"head_dim": 16, "rope_scaling": null}));
    assert!(e.contains("max_position_embeddings"), "{e}");
    let e = err(json!({"max_position_embeddings": 32, "num_attention_heads": 4}));
    assert!(e.contains("hidden_size"), "{e}");
    let e = err(json!({"max_position_embeddings": 32, "hidden_size": 64}));
    assert!(e.contains("num_attention_heads"), "{e}");
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32, "rotary_pct": 1.5}));
    assert!(e.contains("rotary_pct") && e.contains("(0, 1]"), "{e}");
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32, "partial_rotary_factor": 0.1}));
    assert!(e.contains("partial_rotary_factor") && e.contains("even"), "{e}");
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32, "rope_scaling": "linear"}));
    assert!(e.contains("rope_scaling") && e.contains("JSON object"), "{e}");
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32, "rope_theta": -1}));
    assert!(e.contains("rope_theta"), "{e}");
    let e = err(json!({"head_dim": 16, "max_position_embeddings": 32,
        "rope_parameters": {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "default"}}}));
    assert!(e.contains("rope_parameters") && e.contains("per-layer"), "{e}");
    let e = err(json!([1, 2]));
    assert!(e.contains("JSON object"), "{e}");
    let e = RopeConfig::from_hf_str("{not json").unwrap_err().to_string();
    assert!(e.contains("invalid config JSON"), "{e}");
}
