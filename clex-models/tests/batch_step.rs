//! Continuous batching: [`Session::step_batch`] runs several sessions' decode steps as one
//! batch; every row must equal the same session stepped alone, across CLEX t boundaries
//! (each row at its own t), under both cache policies, with log scaling and a sliding
//! window. Also [`Session::truncate`]: a truncated session continued equals a fresh one.

use burn::backend::Flex;
use clex_models::{CachePolicy, CausalLm, ModelConfig, Session, init_model};
use serde_json::{Value, json};

/// A LLaMA with grouped heads, P = 16 (t changes every 16 tokens), `rope_scaling`.
fn llama(rope_scaling: Value, log_scale: bool, window: Option<usize>) -> ModelConfig {
    let raw = json!({"model_type": "llama", "vocab_size": 96, "hidden_size": 96, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "max_position_embeddings": 16,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": rope_scaling, "hidden_act": "silu",
        "tie_word_embeddings": false, "log_scale": log_scale, "sliding_window": window});
    ModelConfig::from_json(raw, std::path::Path::new("<test>")).unwrap()
}

fn clex_scaling() -> Value {
    json!({"type": "clex", "max_factor": 16, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1})
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt * 17 + i * i % 7) % 95 + 1).collect()
}

/// max |a − b| over max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// Prompts of different lengths (so rows cross t boundaries at different steps) decoded
/// together for `steps` steps, against each decoded alone. Rows join late and leave early,
/// as requests do in a server.
fn batched_equals_alone(model: &CausalLm<Flex>, policy: CachePolicy, what: &str) {
    let prompts = [ids(5, 1), ids(14, 2), ids(31, 3), ids(16, 4)];
    let steps = 24;
    // Alone: logits after each step's token.
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .enumerate()
        .map(|(r, p)| {
            let mut s = Session::new(model, policy);
            s.prefill(p).unwrap();
            (0..steps).map(|j| s.step(ids(steps, 10 + r as u32)[j]).unwrap()).collect()
        })
        .collect();
    // Batched: row 3 joins at step 6, row 0 leaves after step 17.
    let mut sessions: Vec<Session<Flex>> = prompts.iter().map(|_| Session::new(model, policy)).collect();
    let mut done = [0usize; 4];
    for j in 0..steps + 6 {
        let active: Vec<usize> = (0..4).filter(|&r| (r != 3 || j >= 6) && (r != 0 || j < 18) && done[r] < steps).collect();
        let mut rows = Vec::new();
        let mut toks = Vec::new();
        for (r, s) in sessions.iter_mut().enumerate() {
            if active.contains(&r) {
                if s.tokens().is_empty() {
                    s.prefill(&prompts[r]).unwrap();
                }
                toks.push(ids(steps, 10 + r as u32)[done[r]]);
                rows.push(s);
            }
        }
        if rows.is_empty() {
            continue;
        }
        let out = Session::step_batch(&mut rows, &toks).unwrap();
        for (&r, logits) in active.iter().zip(&out) {
            let d = rel_diff(logits, &alone[r][done[r]]);
            assert!(d < 1e-5, "{what}: row {r} step {}: batched vs alone {d:e}", done[r]);
            done[r] += 1;
        }
    }
    assert_eq!(done, [18, steps, steps, steps], "{what}: every row ran its steps");
    for (r, s) in sessions.iter().enumerate() {
        assert_eq!(s.tokens().len(), prompts[r].len() + done[r], "{what}: row {r} tokens");
    }
    if policy == CachePolicy::Reference {
        // Rows crossed t boundaries inside the batch (5 + 24 > 16, 31 + 24 > 48).
        assert!(sessions.iter().all(|s| s.cache().stats().rerotations > 0), "{what}: every row re-rotated");
    } else {
        assert!(sessions.iter().all(|s| s.cache().stats().recomputes > 0), "{what}: every row replayed");
    }
}

#[test]
fn batched_steps_equal_sessions_stepped_alone() {
    let cases = [("clex", llama(clex_scaling(), false, None)), ("clex log scale + window", llama(clex_scaling(), true, Some(20)))];
    for (name, cfg) in cases {
        let model = init_model::<Flex>(cfg, &Default::default(), 5);
        for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
            batched_equals_alone(&model, policy, &format!("{name} {policy:?}"));
        }
    }
}

/// A shared prefix kept by `truncate`, then new tokens: equal to running the whole input in
/// a fresh session (plain RoPE; under CLEX a truncation back across a t boundary keeps the
/// values computed under the later θ, like any reference-policy cache).
#[test]
fn truncated_session_continues_like_a_fresh_one() {
    let model = init_model::<Flex>(llama(Value::Null, false, None), &Default::default(), 6);
    let (a, b) = (ids(40, 1), ids(12, 2));
    let mut s = Session::new(&model, CachePolicy::Reference);
    s.prefill(&a).unwrap();
    s.truncate(25);
    assert_eq!(s.tokens(), &a[..25]);
    let got = s.logits(&b).unwrap();
    let mut fresh = Session::new(&model, CachePolicy::Reference);
    let whole: Vec<u32> = a[..25].iter().chain(&b).copied().collect();
    let want = fresh.logits(&whole).unwrap();
    let d = rel_diff(&got, &want[25 * 96..]);
    assert!(d < 1e-5, "truncated then continued vs fresh: {d:e}");
    s.truncate(0);
    assert!(s.tokens().is_empty() && s.cache().is_empty());
}

/// A prompt run in parts pinned to its whole length equals one prefill (CLEX, t of the whole:
/// the parts alone would be at smaller t).
#[test]
fn prefill_in_parts_equals_one_prefill() {
    let model = init_model::<Flex>(llama(clex_scaling(), true, None), &Default::default(), 7);
    let prompt = ids(70, 3);
    for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
        let mut whole = Session::new(&model, policy);
        let want = whole.prefill(&prompt).unwrap();
        let mut parts = Session::new(&model, policy);
        for (i, part) in prompt.chunks(16).enumerate() {
            let got = parts.prefill_part(part, prompt.len()).unwrap();
            if (i + 1) * 16 >= prompt.len() {
                let d = rel_diff(&got, &want);
                assert!(d < 1e-5, "{policy:?}: parts vs one prefill {d:e}");
            }
        }
        assert_eq!(parts.cache().stats().recomputes + parts.cache().stats().rerotations, 0, "{policy:?}: one t throughout");
        if policy == CachePolicy::Recompute {
            continue; // unpinned parts replay at each t change, so they equal the whole too
        }
        // Unpinned parts would be a different computation (t grows from 1 to 5).
        let mut unpinned = Session::new(&model, policy);
        let mut last = Vec::new();
        for part in prompt.chunks(16) {
            last = unpinned.prefill(part).unwrap();
        }
        assert!(rel_diff(&last, &want) > 1e-4, "{policy:?}: the pinning matters here");
    }
}
