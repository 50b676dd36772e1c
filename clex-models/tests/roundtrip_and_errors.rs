//! Saving and reloading (exact), sharded checkpoints, reduced-precision weights, left-padded
//! batches, and every malformed-input error naming what is wrong.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{DType, Int, Tensor, TensorData};
use clex_models::weights::Weights;
use clex_models::{CachePolicy, ForwardOptions, ModelError, hf_tensors, save_model};
use common::*;
use safetensors::{Dtype, tensor::TensorView};

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().zip(&bytes).map(|((n, s, _), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn test_ids() -> Tensor<B, 2, Int> {
    let v: Vec<i64> = (0..70).map(|i| (i * 37 % 256) as i64).collect();
    Tensor::from_data(TensorData::new(v, [1, 70]), &Default::default())
}

#[test]
fn save_then_load_is_exact() {
    for (config, weights) in [
        ("clex/llama_clex.json", "clex/llama_clex.safetensors"),
        ("clex/gpt_neox_clex.json", "clex/gpt_neox_clex.safetensors"),
        ("hf/llama_yarn.json", "hf/llama.safetensors"),
    ] {
        let model = load(config, weights);
        let dir = tempfile::tempdir().unwrap();
        save_model(&model, dir.path()).unwrap();
        let back = load_path(dir.path()).unwrap();
        let (a, b) = (values(model.forward(test_ids()).unwrap()), values(back.forward(test_ids()).unwrap()));
        assert_eq!(a, b, "{config}: logits after save/load");
        // The file holds exactly the original tensors, bit for bit.
        let orig = Weights::open(&[fixture(weights)]).unwrap();
        let saved = Weights::open(&[dir.path().join("model.safetensors")]).unwrap();
        assert_eq!(orig.names(), saved.names(), "{config}: tensor names");
        for name in orig.names() {
            assert_eq!(orig.read_f32(&name).unwrap(), saved.read_f32(&name).unwrap(), "{config}: {name}");
        }
        assert!(!dir.path().join("model.safetensors.tmp").exists());
    }
}

#[test]
fn sharded_checkpoint_loads() {
    let model = load("clex/gpt_neox_clex.json", "clex/gpt_neox_clex.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let tensors = hf_tensors(&model);
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let mut map = HashMap::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        write_safetensors(
            &dir.path().join(file),
            &part.iter().map(|t| (t.name.clone(), t.shape.clone(), t.values.clone())).collect::<Vec<_>>(),
        );
        for t in part {
            map.insert(t.name.clone(), serde_json::Value::from(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::copy(fixture("clex/gpt_neox_clex.json"), dir.path().join("config.json")).unwrap();
    let sharded = load_path(dir.path()).unwrap();
    assert_eq!(values(model.forward(test_ids()).unwrap()), values(sharded.forward(test_ids()).unwrap()));
}

#[test]
fn half_precision_checkpoints_load_and_save_in_their_dtype() {
    let model = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let f32_logits = values(model.forward(test_ids()).unwrap());
    let half = load_from(&fixture("clex/llama_clex.json"), &fixture("clex/llama_clex.safetensors"), DType::F16);
    let dir = tempfile::tempdir().unwrap();
    save_model(&half, dir.path()).unwrap();
    let ck = Weights::open(&[dir.path().join("model.safetensors")]).unwrap();
    assert_eq!(ck.dtype_of("model.layers.0.self_attn.q_proj.weight"), Some(Dtype::F16));
    assert_eq!(ck.dtype_of("model.clex_layer.proj_func.ode_up_proj"), Some(Dtype::F32), "CLEX parameters stay f32");
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(raw["torch_dtype"], "float16");
    // The file holds exactly the f16-rounded originals (CLEX parameters exactly the f32 ones).
    let orig = Weights::open(&[fixture("clex/llama_clex.safetensors")]).unwrap();
    assert_eq!(orig.names(), ck.names());
    let mut rounded = 0;
    for name in orig.names() {
        let (want, _) = orig.read_f32(&name).unwrap();
        let (got, _) = ck.read_f32(&name).unwrap();
        if ck.dtype_of(&name) == Some(Dtype::F16) {
            let want: Vec<f32> = want.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            assert_eq!(got, want, "{name}: the f16 rounding of the original");
            rounded += 1;
        } else {
            assert!(name.contains("clex_layer"), "{name} is {:?}", ck.dtype_of(&name));
            assert_eq!(got, want, "{name}");
        }
    }
    assert!(rounded > 10, "{rounded} f16 tensors");
    // Reloaded in f32, the rounded weights move the logits by the model's sensitivity to a
    // 2^-11 relative change of every weight. Measured 2.7e-2 (logits up to ~6); ~4x margin.
    let back = load_path(dir.path()).unwrap();
    let back_logits = values(back.forward(test_ids()).unwrap());
    let worst = check("f16-rounded weights, f32 compute", &back_logits, &f32_logits, 0.1);
    // f16 compute (attention softmax in f32) against f32 compute on the same rounded weights:
    // only the arithmetic's rounding is left. Measured 3.2e-2; ~5x margin.
    let half_logits = values(half.forward(test_ids()).unwrap());
    let worst_half = check("f16 compute vs f32 compute of the same weights", &half_logits, &back_logits, 0.15);
    eprintln!("f16 round trip: rounded weights move logits by {worst:.2e}; f16 compute by a further {worst_half:.2e}");
    assert!(worst > 0.0 && worst_half > 0.0, "the weights really were rounded, the compute really was f16");
}

fn load_from(config: &Path, weights: &Path, dtype: DType) -> clex_models::CausalLm<B> {
    clex_models::ModelSource::from_files(config, &[weights.to_path_buf()]).unwrap().load::<B>(&Default::default(), dtype).unwrap()
}

/// How a test model's rotary frequencies follow the length, written out by hand from the
/// docs/CLEX.md §6.1 (not through the model's own schedule code), so the padded-batch test can tell a
/// wrong N or t from a right one.
#[derive(Clone, Copy)]
enum Freqs {
    /// CLEX: t = ceil(N/P) up to max_factor, θ(t) from the model's table (docs/CLEX.md §6.1, §4.3).
    Clex { p: usize, max_t: usize },
    /// Dynamic NTK: base' = base · (factor·N/P − (factor − 1))^(d/(d−2)) once N > P.
    Dynamic { base: f64, factor: f64, p: usize, dim: usize },
}

impl Freqs {
    /// The inverse frequencies of a forward over `n` positions (padding included), and the
    /// CLEX t.
    fn at(self, model: &clex_models::CausalLm<B>, n: usize) -> (Tensor<B, 1>, Option<usize>) {
        match self {
            Freqs::Clex { p, max_t } => {
                let t = n.div_ceil(p).clamp(1, max_t);
                (model.clex_layer.as_ref().unwrap().theta(t), Some(t))
            }
            Freqs::Dynamic { base, factor, p, dim } => {
                let alpha = if n > p { factor * n as f64 / p as f64 - (factor - 1.0) } else { 1.0 };
                let b = base * alpha.powf(dim as f64 / (dim as f64 - 2.0));
                let inv: Vec<f32> = (0..dim / 2).map(|i| b.powf(-2.0 * i as f64 / dim as f64) as f32).collect();
                (Tensor::from_data(TensorData::new(inv, [dim / 2]), &Default::default()), None)
            }
        }
    }

    /// The settings of the model config at `rel` (a fixture), read from its JSON so the test
    /// follows the fixture: CLEX's P and max_factor, or dynamic NTK's θ base, factor, P and
    /// rotary dim (head_dim × partial_rotary_factor).
    fn of_fixture(rel: &str) -> Freqs {
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap();
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("{rel}: {v} is not a number"));
        let p = num(&cfg["max_position_embeddings"]) as usize;
        if let Some(clex) = cfg.get("rope_scaling").filter(|r| r["type"] == "clex" || r["rope_type"] == "clex") {
            return Freqs::Clex { p, max_t: num(&clex["max_factor"]) as usize };
        }
        let rp = &cfg["rope_parameters"];
        assert_eq!(rp["rope_type"], "dynamic", "{rel}");
        let head_dim = num(&cfg["hidden_size"]) / num(&cfg["num_attention_heads"]);
        let dim = (head_dim * rp.get("partial_rotary_factor").map_or(1.0, num)) as usize;
        Freqs::Dynamic { base: num(&rp["rope_theta"]), factor: num(&rp["factor"]), p, dim }
    }

    /// P: the position past which the frequencies change (max_position_embeddings).
    fn p(self) -> usize {
        match self {
            Freqs::Clex { p, .. } | Freqs::Dynamic { p, .. } => p,
        }
    }

    /// True when the frequencies at `a` and `b` positions differ.
    fn change(self, a: usize, b: usize) -> bool {
        match self {
            Freqs::Clex { p, max_t } => a.div_ceil(p).min(max_t) != b.div_ceil(p).min(max_t),
            Freqs::Dynamic { p, .. } => a.max(p) != b.max(p),
        }
    }
}

/// Logits of `ids` alone (positions 0..len, no padding) at the frequencies of a forward over
/// `n` positions: the hand-made reference for a left-padded row of a batch whose padded
/// length is `n`.
fn row_at_n(model: &clex_models::CausalLm<B>, freqs: Freqs, ids: &[i64], n: usize) -> Vec<f32> {
    let (inv_freq, _) = freqs.at(model, n);
    let positions = (0..ids.len()).map(|i| i as f32).collect();
    let (cos, sin) = model.rotary_tables(positions, 1, inv_freq, 1.0);
    let tokens = Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &Default::default());
    values(model.forward_rotary(tokens, cos, sin))
}

/// Rows of different lengths, left-padded, against each row alone, in the prefill and
/// through cached decoding, under both cache policies. The reference fixes one t (CLEX) or
/// one dynamic-NTK base per forward for the whole batch from the padded length N (docs/CLEX.md
/// §6.1), so every row here is compared with the hand-made frequencies of N
/// ([`row_at_n`]), which differ from the row's own length once N crosses P·k:
/// - Recompute: every forward equals a full forward of the row alone at N's frequencies.
/// - Reference: until the frequencies first change, the same. After a change, cached values
///   and the keys of deeper layers still come from hidden states made under the old
///   frequencies (CLEX, docs/CLEX.md §6.2; dynamic NTK keeps even the old key rotations, as
///   transformers), so a row must equal the same row decoded on its own with the same
///   padding, policy and steps; and with one layer, whose cache is just re-rotated raw keys
///   and values of the embeddings, CLEX decoding is again a full forward at N.
///
/// Both models cross P during the decode: CLEX P = 32 (N = 28 → 36, t 1 → 2) and dynamic
/// NTK P = 128 (N = 124 → 132). Rows are padded by 1, 2 and 8 tokens, so N is never a row's
/// own length (alone, the rows would cross P one step, two steps later or never); the pad
/// id is nonzero so that unmasked padding would show.
#[test]
fn left_padded_batch_equals_rows_alone() {
    // Row vs hand-made reference: measured 6.4e-6 (batch vs single-row matmuls); ~10x margin.
    const TOL: f32 = 6e-5;
    // Row vs the row decoded alone: measured 0 (bit-identical); a bound for other CPUs' sums.
    const ALONE_TOL: f32 = 1e-6;
    let clex = Freqs::of_fixture("clex/llama_clex.json");
    let dynamic = Freqs::of_fixture("hf/gpt_neox_dynamic.json");
    let one_layer = |mut m: clex_models::CausalLm<B>| {
        m.layers.truncate(1);
        m
    };
    let models = [
        // Prefills 4 positions below P, so that the 8 decode steps cross it.
        ("clex llama", load("clex/llama_clex.json", "clex/llama_clex.safetensors"), clex, clex.p() - 4),
        ("clex llama, 1 layer", one_layer(load("clex/llama_clex.json", "clex/llama_clex.safetensors")), clex, clex.p() - 4),
        ("dynamic gpt_neox", load("hf/gpt_neox_dynamic.json", "hf/gpt_neox.safetensors"), dynamic, dynamic.p() - 4),
    ];
    let device = Default::default();
    let (v, steps, pads) = (256, 8, [1usize, 2, 8]);
    let mut worst = (0.0f32, 0.0f32);
    for (name, model, freqs, width) in &models {
        let (model, freqs, width) = (model, *freqs, *width);
        assert!(freqs.change(width, width + steps), "{name}: the decode must cross P");
        for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
            let mut rows: Vec<Vec<i64>> =
                pads.iter().enumerate().map(|(r, &p)| (0..width - p).map(|i| ((i * (7 + 4 * r) + r) % 256) as i64).collect()).collect();
            let padded = |r: usize, row: &[i64]| -> Vec<i64> { std::iter::repeat_n(77, pads[r]).chain(row.iter().copied()).collect() };
            let batch: Vec<i64> = rows.iter().enumerate().flat_map(|(r, row)| padded(r, row)).collect();
            let batch = Tensor::<B, 2, Int>::from_data(TensorData::new(batch, [pads.len(), width]), &device);
            let mut cache = model.new_cache(policy);
            let opts = ForwardOptions { left_padding: Some(pads.to_vec()), ..Default::default() };
            let out = model.forward_with(batch, Some(&mut cache), &opts).unwrap();
            let (_, t) = freqs.at(model, width);
            assert_eq!(out.scaling_factor.map(|s| s.t), t, "{name}: prefill t");
            let out = values(out.logits);
            // Each row alone, with its own padding, decoded in lockstep (the Reference policy's
            // comparison once the frequencies have changed).
            let mut alone: Vec<_> = (0..pads.len())
                .map(|r| {
                    let mut c = model.new_cache(policy);
                    let ids = Tensor::from_data(TensorData::new(padded(r, &rows[r]), [1, width]), &device);
                    model
                        .forward_with(ids, Some(&mut c), &ForwardOptions { left_padding: Some(vec![pads[r]]), ..Default::default() })
                        .unwrap();
                    c
                })
                .collect();
            for (r, row) in rows.iter().enumerate() {
                let got = &out[(r * width + pads[r]) * v..(r + 1) * width * v];
                let d = check(&format!("{name} {policy:?} prefill row {r}"), got, &row_at_n(model, freqs, row, width), TOL);
                worst.0 = worst.0.max(d);
            }
            for step in 0..steps {
                let n = width + step + 1;
                let next: Vec<i64> = (0..pads.len()).map(|r| ((step * 5 + r * 3 + 2) % 256) as i64).collect();
                let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(next.clone(), [pads.len(), 1]), &device);
                let out = model.forward_with(ids, Some(&mut cache), &ForwardOptions::default()).unwrap();
                let (_, t) = freqs.at(model, n);
                assert_eq!(out.scaling_factor.map(|s| s.t), t, "{name} step {step}: t of N = {n}");
                let out = values(out.logits);
                let changed = freqs.change(width, n);
                for (r, row) in rows.iter_mut().enumerate() {
                    row.push(next[r]);
                    let what = format!("{name} {policy:?} decode step {step} (N = {n}) row {r} (pad {})", pads[r]);
                    let got = &out[r * v..(r + 1) * v];
                    let exact = policy == CachePolicy::Recompute || !changed || (*name == "clex llama, 1 layer");
                    if exact {
                        let full = row_at_n(model, freqs, row, n);
                        worst.0 = worst.0.max(check(&what, got, &full[full.len() - v..], TOL));
                    }
                    let ids = Tensor::from_data(TensorData::new(vec![next[r]], [1, 1]), &device);
                    let own = values(model.forward_with(ids, Some(&mut alone[r]), &ForwardOptions::default()).unwrap().logits);
                    worst.1 = worst.1.max(check(&format!("{what} vs the row decoded alone"), got, &own, ALONE_TOL));
                }
            }
            // One change of t (CLEX, N = 33) or four of the dynamic base (N = 129..132).
            let changes = (0..steps).filter(|s| freqs.change(width + s, width + s + 1)).count();
            let stats = cache.stats();
            let want = match (freqs, policy) {
                (Freqs::Clex { .. }, CachePolicy::Reference) => (changes, 0),
                (_, CachePolicy::Recompute) => (0, changes),
                // Dynamic NTK under Reference keeps the cached keys' rotations (transformers).
                (Freqs::Dynamic { .. }, CachePolicy::Reference) => (0, 0),
            };
            assert_eq!((stats.rerotations, stats.recomputes), want, "{name} {policy:?}: {stats:?}");
        }
    }
    eprintln!("left padding: max |diff| vs hand-made frequencies {:.2e}, vs rows decoded alone {:.2e}", worst.0, worst.1);
}

fn expect_err(r: Result<clex_models::CausalLm<B>, ModelError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn model_dir(config: &str, weights: &[(String, Vec<usize>, Vec<f32>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), weights);
    dir
}

#[test]
fn malformed_inputs_give_specific_errors() {
    let model = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let config = std::fs::read_to_string(fixture("clex/llama_clex.json")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = hf_tensors(&model).into_iter().map(|t| (t.name, t.shape, t.values)).collect();
    let load_dir = load_path;

    // Missing tensor.
    let without: Vec<_> = tensors.iter().filter(|t| t.0 != "model.layers.1.mlp.up_proj.weight").cloned().collect();
    let e = expect_err(load_dir(model_dir(&config, &without).path()));
    assert!(e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`") && e.contains("[172, 64]"), "{e}");

    // Wrong shape: both shapes named.
    let mut wrong = tensors.clone();
    let i = wrong.iter().position(|t| t.0 == "model.layers.0.self_attn.k_proj.weight").unwrap();
    wrong[i].1 = vec![64, 32];
    let e = expect_err(load_dir(model_dir(&config, &wrong).path()));
    assert!(e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("[64, 32]") && e.contains("[32, 64]"), "{e}");

    // A CLEX tensor with the wrong shape.
    let mut wrong = tensors.clone();
    let i = wrong.iter().position(|t| t.0 == "model.clex_layer.proj_func.ode_up_proj").unwrap();
    wrong[i] = (wrong[i].0.clone(), vec![16, 8], wrong[i].2.clone());
    let e = expect_err(load_dir(model_dir(&config, &wrong).path()));
    assert!(e.contains("model.clex_layer.proj_func.ode_up_proj") && e.contains("[16, 8]") && e.contains("[8, 16]"), "{e}");

    // Unexpected tensor.
    let mut extra = tensors.clone();
    extra.push(("model.layers.0.self_attn.q_norm.weight".into(), vec![16], vec![1.0; 16]));
    let e = expect_err(load_dir(model_dir(&config, &extra).path()));
    assert!(e.contains("unexpected tensors") && e.contains("q_norm"), "{e}");
    // ...but rotary buffers that some exports carry are ignored.
    let mut buffers = tensors.clone();
    buffers.push(("model.layers.0.self_attn.rotary_emb.inv_freq".into(), vec![8], vec![1.0; 8]));
    assert!(load_dir(model_dir(&config, &buffers).path()).is_ok());

    // Truncated safetensors.
    let dir = model_dir(&config, &tensors);
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = expect_err(load_dir(dir.path()));
    assert!(e.contains("model.safetensors"), "{e}");

    // Bad JSON, unsupported architecture, bad rope settings, missing files.
    let e = expect_err(load_dir(model_dir("{\"model_type\": \"llama\",", &tensors).path()));
    assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");
    let e = expect_err(load_dir(model_dir(&config.replace("\"llama\"", "\"mamba\""), &tensors).path()));
    assert!(e.contains("unsupported model_type `mamba`") && e.contains("gpt_neox"), "{e}");
    let e = expect_err(load_dir(model_dir(&config.replace("\"tanh\"", "\"relu\""), &tensors).path()));
    assert!(e.contains("rope_scaling.act") && e.contains("tanh, silu"), "{e}");
    let e = expect_err(load_dir(model_dir(&config.replace("\"vocab_size\"", "\"vocab\""), &tensors).path()));
    assert!(e.contains("vocab_size"), "{e}");
    let e = expect_err(load_dir(Path::new("/nonexistent/model")));
    assert!(e.contains("/nonexistent/model"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("config.json"), &config).unwrap();
    let e = expect_err(load_dir(empty.path()));
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn a_model_without_clex_loads_with_its_own_rope() {
    let model = load("hf/llama_dynamic.json", "hf/llama.safetensors");
    assert!(model.clex_layer.is_none());
    assert_eq!(model.rope().scaling.kind(), "dynamic");
    // CLEX tensors in a non-CLEX model are unexpected.
    let clex = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let t: Vec<(String, Vec<usize>, Vec<f32>)> = hf_tensors(&clex).into_iter().map(|t| (t.name, t.shape, t.values)).collect();
    let cfg = std::fs::read_to_string(fixture("clex/llama_clex.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let mut v = v.as_object().unwrap().clone();
    v.remove("rope_scaling");
    let e = expect_err(load_path(model_dir(&serde_json::Value::Object(v).to_string(), &t).path()));
    assert!(e.contains("unexpected tensors") && e.contains("clex_layer"), "{e}");
}
