//! Long-context inference: burn-flex's attention kernel against the explicit path through
//! whole models (prefill, cached decode, left padding, grouped heads, partial rotary, CLEX
//! log scale), and chunked prefill against one forward. (What a decode step allocates is
//! measured in `decode_allocations.rs`, alone in its process.)
//!
//! The explicit path is what `Autodiff<Flex>` runs (`clex_core::attention::explicit`), so
//! the same seeded weights on `Flex` and on `Autodiff<Flex>` compare the two attentions.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use clex_core::ClexBackend;
use clex_models::{CachePolicy, CausalLm, ForwardOptions, ModelConfig, Session, init_model};
use serde_json::{Value, json};

/// A LLaMA with grouped heads (6 query heads on 2 KV heads), P = 32, and `rope_scaling`.
fn llama(rope_scaling: Value, log_scale: bool) -> ModelConfig {
    llama_at(32, rope_scaling, log_scale)
}

/// [`llama`] with P = `p`.
fn llama_at(p: usize, rope_scaling: Value, log_scale: bool) -> ModelConfig {
    let raw = json!({"model_type": "llama", "vocab_size": 96, "hidden_size": 96, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "max_position_embeddings": p,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": rope_scaling, "hidden_act": "silu",
        "tie_word_embeddings": false, "log_scale": log_scale});
    ModelConfig::from_json(raw, std::path::Path::new("<test>")).unwrap()
}

/// A GPT-NeoX with partial rotary (a quarter of each head) and a parallel residual.
fn neox() -> ModelConfig {
    let raw = json!({"model_type": "gpt_neox", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32, "rotary_pct": 0.25,
        "rotary_emb_base": 10000, "layer_norm_eps": 1e-5, "use_parallel_residual": true, "hidden_act": "gelu",
        "tie_word_embeddings": false});
    ModelConfig::from_json(raw, std::path::Path::new("<test>")).unwrap()
}

fn clex_scaling() -> Value {
    json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1})
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt * 17 + i * i % 7) % 95 + 1).collect()
}

fn host(t: Tensor<impl burn::tensor::backend::Backend, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// max |a − b| over max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// Logits of a prefill of `prompt` then `steps` cached decode steps, every row.
fn session_logits<B: ClexBackend>(model: &CausalLm<B>, prompt: &[u32], steps: &[u32], policy: CachePolicy) -> Vec<f32> {
    let mut s = Session::new(model, policy);
    let mut out = s.logits(prompt).unwrap();
    for &t in steps {
        out.extend(s.logits(&[t]).unwrap());
    }
    out
}

fn models(cfg: ModelConfig) -> (CausalLm<Flex>, CausalLm<Autodiff<Flex>>) {
    (init_model::<Flex>(cfg.clone(), &Default::default(), 11), init_model::<Autodiff<Flex>>(cfg, &Default::default(), 11))
}

/// Whole models through the flex kernel and the explicit path: prefill long enough for the
/// kernel's GEMM tiles (hundreds of rows), decode steps across CLEX t boundaries (P = 32),
/// log scale, partial rotary, grouped heads, both cache policies.
#[test]
fn flex_kernel_equals_explicit_attention_through_whole_models() {
    let configs = [
        ("llama gqa clex log-scale", llama(clex_scaling(), true)),
        ("llama gqa dynamic", llama(json!({"type": "dynamic", "factor": 2.0}), false)),
        ("neox partial rotary clex", {
            let clex = clex_models::RopeChange::new(clex_models::RopeKind::Clex, 8.0).unwrap();
            neox().with_rope(&clex, None).unwrap()
        }),
    ];
    for (name, cfg) in configs {
        let (flex, explicit) = models(cfg);
        let prompt = ids(90, 1);
        let steps = ids(40, 2); // 90 → 130 tokens: t = 3 → 5
        for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
            let a = session_logits(&flex, &prompt, &steps, policy);
            let b = session_logits(&explicit, &prompt, &steps, policy);
            let d = rel_diff(&a, &b);
            assert!(d < 1e-5, "{name} {policy:?}: {d:e}");
        }
    }
}

/// A left-padded batch (pads 0, 5, 17) through both paths: prefill and cached steps.
#[test]
fn flex_kernel_equals_explicit_attention_on_left_padded_batches() {
    let (flex, explicit) = models(llama(clex_scaling(), false));
    let pads = vec![0, 5, 17];
    let rows: Vec<Vec<u32>> = pads.iter().enumerate().map(|(i, &p)| [vec![0; p], ids(60 - p, i as u32)].concat()).collect();
    fn run<B: ClexBackend>(m: &CausalLm<B>, rows: &[Vec<u32>], pads: &[usize]) -> Vec<f32> {
        let device = Default::default();
        let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), &device);
        let mut cache = m.new_cache(CachePolicy::Reference);
        let opts = ForwardOptions { left_padding: Some(pads.to_vec()), ..Default::default() };
        let mut out = host(m.forward_with(tokens, Some(&mut cache), &opts).unwrap().logits);
        for step in 0..5 {
            let next: Vec<i64> = (0..rows.len()).map(|r| ((r * 7 + step * 3) % 90 + 1) as i64).collect();
            let t = Tensor::<B, 2, Int>::from_data(TensorData::new(next, [rows.len(), 1]), &device);
            out.extend(host(m.forward_with(t, Some(&mut cache), &ForwardOptions::default()).unwrap().logits));
        }
        out
    }
    let a = run(&flex, &rows, &pads);
    let b = run(&explicit, &rows, &pads);
    // Rows' logits at pad positions are not defined the same way (a pad query sees no key:
    // zeros from the kernel, a uniform average from the explicit mask); compare real tokens.
    let vocab = 96;
    let (b_, s) = (rows.len(), rows[0].len());
    let mut worst = 0.0f32;
    for (r, &pad) in pads.iter().enumerate() {
        for i in pad..s {
            let at = (r * s + i) * vocab;
            worst = worst.max(rel_diff(&a[at..at + vocab], &b[at..at + vocab]));
        }
    }
    let tail = b_ * s * vocab;
    worst = worst.max(rel_diff(&a[tail..], &b[tail..]));
    assert!(worst < 1e-5, "{worst:e}");
}

/// A prompt run through the cache in chunks (of 7, 32 and 64 tokens) equals one uncached
/// forward over it, for frequencies that depend on the length (CLEX crossing t = 1 → 4,
/// with and without log scale; dynamic NTK), under both policies.
#[test]
fn chunked_prefill_equals_one_forward() {
    let configs = [
        ("clex", llama(clex_scaling(), false)),
        ("clex log-scale", llama(clex_scaling(), true)),
        ("dynamic", llama(json!({"type": "dynamic", "factor": 2.0}), false)),
    ];
    for (name, cfg) in configs {
        let model = init_model::<Flex>(cfg, &Default::default(), 5);
        let prompt = ids(120, 3);
        let flat: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::<Flex, 2, Int>::from_data(TensorData::new(flat, [1, prompt.len()]), &Default::default());
        let one = host(model.forward(tokens).unwrap());
        for chunk in [7, 32, 64] {
            for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
                let mut s = Session::new(&model, policy).with_prefill_chunk(chunk);
                let chunked = s.logits(&prompt).unwrap();
                let d = rel_diff(&chunked, &one);
                assert!(d < 1e-5, "{name}, chunks of {chunk}, {policy:?}: {d:e}");
                assert_eq!(s.cache().stats().recomputes, 0, "{name}: pinned chunks never replay");
                assert_eq!(s.cache().stats().rerotations, 0, "{name}: pinned chunks never re-rotate");
                // The prefill's last row is the same distribution.
                let mut p = Session::new(&model, policy).with_prefill_chunk(chunk);
                let last = p.prefill(&prompt).unwrap();
                assert!(rel_diff(&last, &one[one.len() - 96..]) < 1e-5, "{name}: prefill's last row");
            }
        }
    }
}
