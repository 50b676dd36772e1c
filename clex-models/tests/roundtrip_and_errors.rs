//! Saving and reloading (exact), sharded checkpoints, reduced-precision weights, left-padded
//! batches, and every malformed-input error naming what is wrong.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{DType, Int, Tensor, TensorData};
use clex_models::weights::Checkpoint;
use clex_models::{CachePolicy, ForwardOptions, ModelError, hf_tensors, load_model, save_model};
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
        let back = load_model::<B>(dir.path(), &Default::default(), DType::F32).unwrap();
        let (a, b) = (values(model.forward(test_ids()).unwrap()), values(back.forward(test_ids()).unwrap()));
        assert_eq!(a, b, "{config}: logits after save/load");
        // The file holds exactly the original tensors, bit for bit.
        let orig = Checkpoint::open(&[fixture(weights)]).unwrap();
        let saved = Checkpoint::open(&[dir.path().join("model.safetensors")]).unwrap();
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
    let sharded = load_model::<B>(dir.path(), &Default::default(), DType::F32).unwrap();
    assert_eq!(values(model.forward(test_ids()).unwrap()), values(sharded.forward(test_ids()).unwrap()));
}

#[test]
fn half_precision_checkpoints_load_and_save_in_their_dtype() {
    let model = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let f32_logits = values(model.forward(test_ids()).unwrap());
    let half = load_from(&fixture("clex/llama_clex.json"), &fixture("clex/llama_clex.safetensors"), DType::F16);
    let dir = tempfile::tempdir().unwrap();
    save_model(&half, dir.path()).unwrap();
    let ck = Checkpoint::open(&[dir.path().join("model.safetensors")]).unwrap();
    assert_eq!(ck.dtype_of("model.layers.0.self_attn.q_proj.weight"), Some(Dtype::F16));
    assert_eq!(ck.dtype_of("model.clex_layer.proj_func.ode_up_proj"), Some(Dtype::F32), "CLEX parameters stay f32");
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(raw["torch_dtype"], "float16");
    // Reload the f16 file in f32: the weights are the f16-rounded originals.
    let back = load_model::<B>(dir.path(), &Default::default(), DType::F32).unwrap();
    let logits = values(back.forward(test_ids()).unwrap());
    let worst = logits.iter().zip(&f32_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 0.1, "f16-rounded weights move logits by {worst}");
    // And the f16 model itself runs (attention softmax in f32) close to the f32 one.
    let half_logits = values(half.forward(test_ids()).unwrap());
    let worst_half = half_logits.iter().zip(&f32_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(half_logits.iter().all(|x| x.is_finite()) && worst_half < 0.25, "f16 compute moves logits by {worst_half}");
    assert!(worst > 0.0, "the weights really were rounded");
}

fn load_from(config: &Path, weights: &Path, dtype: DType) -> clex_models::CausalLm<B> {
    clex_models::load_from_files::<B>(config, &[weights.to_path_buf()], &Default::default(), dtype).unwrap()
}

/// Rows of different lengths, left-padded, give the same logits as each row alone, in the
/// prefill and through cached decoding. t (CLEX) is one per batch, fixed by the padded
/// length as in the reference, so the short row is compared only while t is the same for
/// both; past the t boundary the longest row (which sets t) still matches its own full
/// forward under the Recompute policy.
#[test]
fn left_padded_batch_equals_rows_alone() {
    for (config, weights) in
        [("clex/llama_clex.json", "clex/llama_clex.safetensors"), ("hf/gpt_neox_dynamic.json", "hf/gpt_neox.safetensors")]
    {
        for policy in [CachePolicy::Reference, CachePolicy::Recompute] {
            let model = load(config, weights);
            let device = Default::default();
            let long: Vec<i64> = (0..28).map(|i| (i * 11 % 256) as i64).collect();
            let short: Vec<i64> = (0..20).map(|i| (i * 7 % 256) as i64 + 1).collect();
            let pad = long.len() - short.len();
            let mut batch = long.clone();
            batch.extend(std::iter::repeat_n(0, pad).chain(short.iter().copied()));
            let batch_ids = Tensor::<B, 2, Int>::from_data(TensorData::new(batch, [2, long.len()]), &device);
            let mut cache = model.new_cache(policy);
            let opts = ForwardOptions { left_padding: Some(vec![0, pad]), ..Default::default() };
            let out = values(model.forward_with(batch_ids, Some(&mut cache), &opts).unwrap().logits);
            let v = 256;
            let alone =
                |ids: &[i64]| values(model.forward(Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device)).unwrap());
            check(&format!("{config} row 0"), &out[..long.len() * v], &alone(&long), 1e-4);
            check(&format!("{config} row 1 (padded)"), &out[(long.len() + pad) * v..], &alone(&short), 1e-4);
            let (mut l, mut s) = (long.clone(), short.clone());
            for step in 0..8 {
                let (a, b) = ((step * 5 % 256) as i64, (step * 3 % 256) as i64 + 2);
                l.push(a);
                s.push(b);
                let step_ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![a, b], [2, 1]), &device);
                let out = values(model.forward_with(step_ids, Some(&mut cache), &ForwardOptions::default()).unwrap().logits);
                let last = |full: Vec<f32>| full[full.len() - v..].to_vec();
                let same_t = l.len() <= 32 || config.contains("dynamic");
                if same_t {
                    check(&format!("{config} {policy:?} decode {step} row 0"), &out[..v], &last(alone(&l)), 1e-4);
                    check(&format!("{config} {policy:?} decode {step} row 1"), &out[v..], &last(alone(&s)), 1e-4);
                } else if policy == CachePolicy::Recompute {
                    check(&format!("{config} {policy:?} decode {step} row 0 past the boundary"), &out[..v], &last(alone(&l)), 1e-4);
                }
            }
        }
    }
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
    let load_dir = |d: &Path| load_model::<B>(d, &Default::default(), DType::F32);

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
    let e = expect_err(load_model::<B>(model_dir(&serde_json::Value::Object(v).to_string(), &t).path(), &Default::default(), DType::F32));
    assert!(e.contains("unexpected tensors") && e.contains("clex_layer"), "{e}");
}
