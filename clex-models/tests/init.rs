//! Fresh models: random init from a config, and a fresh CLEX layer on a non-CLEX model
//! (D = 0, so at N = t·P it is exactly dynamic NTK with factor 2).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use clex_core::ClexParams;
use clex_models::{ModelConfig, attach_fresh_clex, init_model, save_model};
use common::*;

fn tokens(n: usize) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = (0..n).map(|i| (i * 31 % 256) as i64).collect();
    Tensor::from_data(TensorData::new(v, [1, n]), &Default::default())
}

#[test]
fn fresh_clex_layer_starts_as_dynamic_ntk_factor_two() {
    let base = load("hf/llama_default.json", "hf/llama.safetensors");
    let params = ClexParams::fresh(8);
    let clex = attach_fresh_clex(base, params).unwrap();
    assert!(clex.config().is_clex());
    let base = load("hf/llama_default.json", "hf/llama.safetensors");
    // Within P the CLEX model is the base model (t = 1 uses inv_freq).
    check("N = 100 (t = 1)", &values(clex.forward(tokens(100)).unwrap()), &values(base.forward(tokens(100)).unwrap()), 1e-5);
    // At N = t·P, α = 2t − 1 equals dynamic NTK's factor·N/P − (factor − 1) with factor 2.
    let mut raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("hf/llama_dynamic.json")).unwrap()).unwrap();
    raw["rope_parameters"]["factor"] = serde_json::json!(2.0);
    let cfg = ModelConfig::from_json(raw, std::path::Path::new("dynamic2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.raw.to_string()).unwrap();
    std::fs::copy(fixture("hf/llama.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let dynamic = load_path(dir.path()).unwrap();
    // The frequencies themselves: θ(t) from the f32 ODE against dynamic NTK's closed form at
    // N = t·P, for every t up to T_max.
    let p = base.rope().max_position_embeddings;
    let mut worst_theta = 0.0f32;
    for t in 2..=8 {
        let ode = values(clex.clex_layer.as_ref().unwrap().theta(t));
        let ntk = values(clex_core::frequencies::<B>(dynamic.rope(), None, t * p, &Default::default()).inv_freq);
        for (a, b) in ode.iter().zip(&ntk) {
            worst_theta = worst_theta.max((a - b).abs() / b);
        }
    }
    // Measured 8.4e-6 relative (f32 RK steps, t = 8); ~10x margin. α = 2t for 2t − 1 would
    // be 5-30%.
    assert!(worst_theta < 1e-4, "θ(t) vs dynamic NTK: max relative diff {worst_theta:e}");
    for n in [256, 384] {
        // That θ error times angles m·θ up to 384 rad: measured 2.2e-4 at N = 384; ~5x margin.
        let d = check(&format!("N = {n}"), &values(clex.forward(tokens(n)).unwrap()), &values(dynamic.forward(tokens(n)).unwrap()), 1e-3);
        eprintln!("fresh CLEX vs dynamic NTK (factor 2) at N = {n}: max |diff| {d:e}; θ max relative diff {worst_theta:e}");
    }
    // Saved, the CLEX model reloads with its new rope block.
    let out = tempfile::tempdir().unwrap();
    save_model(&clex, out.path()).unwrap();
    let back = load_path(out.path()).unwrap();
    assert_eq!(back.rope().scaling, clex.rope().scaling);
    assert_eq!(values(back.forward(tokens(300)).unwrap()), values(clex.forward(tokens(300)).unwrap()));
}

#[test]
fn init_from_config_runs_and_round_trips() {
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("clex/gpt_neox_clex.json")).unwrap()).unwrap();
    let cfg = ModelConfig::from_json(raw, std::path::Path::new("neox")).unwrap();
    let m = init_model::<B>(cfg.clone(), &Default::default(), 7);
    let again = init_model::<B>(cfg, &Default::default(), 7);
    assert_eq!(values(m.embed.weight.val()), values(again.embed.weight.val()), "weights depend on the seed only");
    let w = m.clex_layer.as_ref().unwrap().weights();
    assert!(w.down.iter().all(|x| *x == 0.0));
    let logits = values(m.forward(tokens(40)).unwrap());
    assert!(logits.iter().all(|x| x.is_finite()));
    // Near-uniform predictions from small random weights: mean |logit| well below 1.
    let mean = logits.iter().map(|x| x.abs()).sum::<f32>() / logits.len() as f32;
    assert!(mean < 0.5, "{mean}");
    let dir = tempfile::tempdir().unwrap();
    save_model(&m, dir.path()).unwrap();
    let back = load_path(dir.path()).unwrap();
    assert_eq!(values(back.forward(tokens(40)).unwrap()), logits);
}
