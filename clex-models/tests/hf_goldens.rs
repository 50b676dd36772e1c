//! transformers 5.24 reference logits and every hidden state of the tiny LLaMA (GQA) and
//! GPT-NeoX (partial rotary, parallel residual) models with default / linear / dynamic /
//! yarn RoPE at 64 and 512 tokens (P = 128, factor 4), loaded from both the transformers-5
//! `config.json` and the legacy `config_legacy.json`. Tolerance: 1e-4 absolute.

mod common;

use clex_models::{CachePolicy, ForwardOptions};
use common::*;

#[test]
fn logits_and_hidden_states_match_transformers() {
    let g = golden("hf/logits.safetensors");
    let mut report = Vec::new();
    for arch in ["llama", "gpt_neox"] {
        for kind in ["default", "linear", "dynamic", "yarn"] {
            for suffix in ["", "_legacy"] {
                let model = load(&format!("hf/{arch}_{kind}{suffix}.json"), &format!("hf/{arch}.safetensors"));
                assert_eq!(model.rope().scaling.kind(), kind);
                let mut worst = 0.0f32;
                for len in [64, 512] {
                    let (ids_v, _) = g.read_f32(&format!("inputs/L{len}")).unwrap();
                    let out = model.forward_with(ids(&ids_v), None, &ForwardOptions { hidden_states: true, ..Default::default() }).unwrap();
                    let key = format!("{arch}/{kind}/L{len}");
                    let (want, shape) = g.read_f32(&format!("{key}/logits")).unwrap();
                    assert_eq!(out.logits.dims().to_vec(), shape);
                    worst = worst.max(check(&format!("{key}{suffix} logits"), &values(out.logits), &want, 1e-4));
                    assert_eq!(out.hidden_states.len(), 3);
                    for (i, h) in out.hidden_states.into_iter().enumerate() {
                        let (want, _) = g.read_f32(&format!("{key}/hidden.{i}")).unwrap();
                        worst = worst.max(check(&format!("{key}{suffix} hidden.{i}"), &values(h), &want, 1e-4));
                    }
                }
                report.push(format!("{arch}/{kind}{suffix}: {worst:.2e}"));
            }
        }
    }
    eprintln!("max abs error per model (logits and hidden states, 64 and 512 tokens):\n  {}", report.join("\n  "));
}

/// With the frequencies fixed (default RoPE), decoding token by token through the cache
/// gives the logits of one full forward, for both architectures and both policies.
#[test]
fn cached_decode_equals_full_forward() {
    let g = golden("hf/logits.safetensors");
    let (ids_v, _) = g.read_f32("inputs/L64").unwrap();
    for arch in ["llama", "gpt_neox"] {
        let model = load(&format!("hf/{arch}_default.json"), &format!("hf/{arch}.safetensors"));
        let full = values(model.forward(ids(&ids_v)).unwrap());
        for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
            let mut cache = model.new_cache(policy);
            let prefill = 20;
            let mut got = values(model.forward_with(ids(&ids_v[..prefill]), Some(&mut cache), &ForwardOptions::default()).unwrap().logits);
            for i in prefill..ids_v.len() {
                got.extend(values(model.forward_with(ids(&ids_v[i..i + 1]), Some(&mut cache), &ForwardOptions::default()).unwrap().logits));
            }
            check(&format!("{arch} {policy:?} decode"), &got, &full, 1e-4);
            assert_eq!(cache.len(), 64);
            assert_eq!(cache.stats().recomputes, 0);
            assert!(cache.memory_bytes() > 0);
        }
    }
}
