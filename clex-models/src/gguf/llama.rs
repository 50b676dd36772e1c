//! A llama.cpp LLaMA GGUF as an HF checkpoint: `config.json` from the `llama.*` metadata,
//! tensors renamed to HF names, dequantised to f32, and q/k rows put back in HF order.
//!
//! llama.cpp's `convert_hf_to_gguf.py` permutes the rows of `q_proj` / `k_proj` so that
//! each head's rotary pairs are adjacent (ggml's interleaved rope); HF rotates halves. Per
//! head of `d` rows, GGUF row `2i + j` is HF row `j·d/2 + i` (i < d/2, j < 2), i.e. the
//! row index viewed as `[d/2, 2]` in GGUF is `[2, d/2]` in HF.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::reader::GgufFile;
use crate::config::ModelConfig;
use crate::error::{GgufError, ModelError};
use crate::weights::HostTensor;

/// Per-layer GGUF tensor stems and their HF names (`{stem}.weight` / `.bias`).
const LAYER_TENSORS: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// The HF name of a llama.cpp LLaMA tensor, if it has one.
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Rows of `values` (`[n_head · d, row_len]`) from llama.cpp's rope order to HF's.
pub fn unpermute_qk(values: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    reorder_rows(values, n_head, row_len, |half, i, j| (2 * i + j, j * half + i))
}

/// Rows of `values` from HF's rope order to llama.cpp's (the inverse of [`unpermute_qk`]).
pub fn permute_qk(values: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    reorder_rows(values, n_head, row_len, |half, i, j| (j * half + i, 2 * i + j))
}

/// Copies, within each head, row `from` of `src` to row `to` of the result, where
/// `(from, to) = map(d/2, i, j)` for i < d/2, j < 2.
fn reorder_rows(src: &[f32], n_head: usize, row_len: usize, map: impl Fn(usize, usize, usize) -> (usize, usize)) -> Vec<f32> {
    let rows = src.len() / row_len;
    assert!(rows.is_multiple_of(2 * n_head) && src.len().is_multiple_of(row_len), "{rows} rows do not split into {n_head} heads of pairs");
    let d = rows / n_head;
    let mut out = vec![0.0; src.len()];
    for h in 0..n_head {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (from, to) = map(d / 2, i, j);
                let (from, to) = ((h * d + from) * row_len, (h * d + to) * row_len);
                out[to..to + row_len].copy_from_slice(&src[from..from + row_len]);
            }
        }
    }
    out
}

/// Reads the `llama.*` hyper-parameters.
struct Hparams {
    heads: usize,
    kv_heads: usize,
}

fn hparams(g: &GgufFile) -> Result<Hparams, ModelError> {
    let heads = g.u64_of("llama.attention.head_count")? as usize;
    let kv_heads = g.u64_opt("llama.attention.head_count_kv")?.map(|v| v as usize).unwrap_or(heads);
    Ok(Hparams { heads, kv_heads })
}

fn check_architecture(g: &GgufFile) -> Result<(), ModelError> {
    let arch = g.str_of("general.architecture")?;
    if arch != "llama" {
        return Err(g.error(GgufError::BadValue {
            key: "general.architecture".into(),
            message: format!("`{}` is not supported; accepted: llama", clex_core::config::echo(arch)),
        }));
    }
    Ok(())
}

/// HF `config.json` for the model in `g`.
pub fn hf_config(g: &GgufFile) -> Result<Value, ModelError> {
    check_architecture(g)?;
    let hp = hparams(g)?;
    let hidden = g.u64_of("llama.embedding_length")? as usize;
    let bad = |key: &str, message: String| g.error(GgufError::BadValue { key: key.into(), message });
    if hp.heads == 0 || !hidden.is_multiple_of(hp.heads) {
        return Err(bad("llama.attention.head_count", format!("{} does not divide embedding_length {hidden}", hp.heads)));
    }
    let head_dim = g.u64_opt("llama.attention.key_length")?.map(|v| v as usize).unwrap_or(hidden / hp.heads);
    if let Some(v) = g.u64_opt("llama.attention.value_length")?
        && v as usize != head_dim
    {
        return Err(bad("llama.attention.value_length", format!("{v} differs from the key length {head_dim}")));
    }
    if let Some(r) = g.u64_opt("llama.rope.dimension_count")?
        && r as usize != head_dim
    {
        // The q/k permutation above covers whole heads; partial rotary LLaMA is not a thing HF has.
        return Err(bad(
            "llama.rope.dimension_count",
            format!("{r} differs from the head size {head_dim}; partial rotary is not supported"),
        ));
    }
    let vocab = match g.u64_opt("llama.vocab_size")? {
        Some(v) => v as usize,
        None => match g.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()) {
            Some(t) => t.len(),
            None => g
                .tensor("token_embd.weight")
                .map(|t| t.shape()[0])
                .ok_or_else(|| g.error(GgufError::MissingKey { key: "llama.vocab_size".into() }))?,
        },
    };
    let has = |name: &str| g.tensor(name).is_some();
    let mut c: BTreeMap<&str, Value> = BTreeMap::new();
    c.insert("architectures", json!(["LlamaForCausalLM"]));
    c.insert("model_type", json!("llama"));
    c.insert("vocab_size", json!(vocab));
    c.insert("hidden_size", json!(hidden));
    c.insert("intermediate_size", json!(g.u64_of("llama.feed_forward_length")?));
    c.insert("num_hidden_layers", json!(g.u64_of("llama.block_count")?));
    c.insert("num_attention_heads", json!(hp.heads));
    c.insert("num_key_value_heads", json!(hp.kv_heads));
    c.insert("head_dim", json!(head_dim));
    c.insert("max_position_embeddings", json!(g.u64_of("llama.context_length")?));
    // f32 in the file, widened exactly (as transformers reads it).
    c.insert("rms_norm_eps", json!(g.f64_opt("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5)));
    c.insert("rope_theta", json!(g.f64_opt("llama.rope.freq_base")?.unwrap_or(10000.0)));
    c.insert("rope_scaling", rope_scaling(g)?);
    c.insert("hidden_act", json!("silu"));
    c.insert("attention_bias", json!(has("blk.0.attn_q.bias")));
    c.insert("mlp_bias", json!(has("blk.0.ffn_gate.bias")));
    // llama.cpp drops `output.weight` when the head is the embedding.
    c.insert("tie_word_embeddings", json!(!has("output.weight")));
    c.insert("torch_dtype", json!("float32"));
    insert_special_token_ids(g, &mut c)?;
    Ok(json!(c))
}

/// `llama.rope.scaling.*` as an HF `rope_scaling` block (null when absent or `none`).
/// The BOS, EOS and padding ids a GGUF's tokenizer metadata names, under their HF keys.
pub(crate) fn insert_special_token_ids(g: &GgufFile, c: &mut BTreeMap<&str, Value>) -> Result<(), ModelError> {
    for (key, hf) in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")] {
        if let Some(id) = g.u64_opt(&format!("tokenizer.ggml.{key}"))? {
            c.insert(hf, json!(id));
        }
    }
    Ok(())
}

fn rope_scaling(g: &GgufFile) -> Result<Value, ModelError> {
    let kind = g.str_opt("llama.rope.scaling.type")?;
    let factor = g.f64_opt("llama.rope.scaling.factor")?.or(g.f64_opt("llama.rope.scale_linear")?);
    Ok(match (kind, factor) {
        (None | Some("none"), None) | (Some("none"), _) => Value::Null,
        (None | Some("linear"), Some(f)) => json!({"rope_type": "linear", "factor": f}),
        (Some("yarn"), Some(f)) => {
            let orig = g.u64_of("llama.rope.scaling.original_context_length")?;
            json!({"rope_type": "yarn", "factor": f, "original_max_position_embeddings": orig})
        }
        (Some(other), _) => {
            return Err(g.error(GgufError::BadValue {
                key: "llama.rope.scaling.type".into(),
                message: format!(
                    "`{}` (with factor {factor:?}) is not supported; accepted: none, linear, yarn",
                    clex_core::config::echo(other)
                ),
            }));
        }
    })
}

/// The HF shape `config` implies for the HF tensor `name`, None for a name the LLaMA
/// builder does not read (a layer past `num_hidden_layers`, an unknown stem).
fn expected_shape(name: &str, config: &ModelConfig) -> Option<Vec<usize>> {
    let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let (q, kv) = (config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim);
    match name {
        "model.embed_tokens.weight" | "lm_head.weight" => return Some(vec![v, h]),
        "model.norm.weight" => return Some(vec![h]),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.parse::<usize>().ok()? >= config.num_layers {
        return None;
    }
    let (module, suffix) = rest.rsplit_once('.')?;
    let (out, inp) = match module {
        "self_attn.q_proj" => (q, h),
        "self_attn.k_proj" | "self_attn.v_proj" => (kv, h),
        "self_attn.o_proj" => (h, q),
        "mlp.gate_proj" | "mlp.up_proj" => (i, h),
        "mlp.down_proj" => (h, i),
        "input_layernorm" | "post_attention_layernorm" => return (suffix == "weight").then(|| vec![h]),
        _ => return None,
    };
    Some(if suffix == "weight" { vec![out, inp] } else { vec![out] })
}

/// Every tensor of `g` under its HF name, f32, in HF layout (shapes as the file says; the
/// model builder checks them).
pub fn hf_tensors(g: &GgufFile) -> Result<Vec<HostTensor>, ModelError> {
    tensors(g, None)
}

/// [`hf_tensors`], each tensor's shape checked against `config` before it is dequantised,
/// so a wrong file costs no memory.
pub fn hf_tensors_for(g: &GgufFile, config: &ModelConfig) -> Result<Vec<HostTensor>, ModelError> {
    tensors(g, Some(config))
}

fn tensors(g: &GgufFile, config: Option<&ModelConfig>) -> Result<Vec<HostTensor>, ModelError> {
    check_architecture(g)?;
    let hp = hparams(g)?;
    let mut out = Vec::with_capacity(g.tensors().len());
    for t in g.tensors() {
        let name = hf_name(&t.name)
            .ok_or_else(|| g.error(GgufError::Unsupported(format!("tensor `{}` has no counterpart in an HF LLaMA checkpoint", t.name))))?;
        let shape = t.shape();
        match config.map(|c| (c, expected_shape(&name, c))) {
            None => {}
            Some((config, None)) => {
                return Err(g.error(GgufError::Unsupported(format!(
                    "tensor `{}` ({name}) is not part of the model the metadata describes ({} layers)",
                    t.name, config.num_layers
                ))));
            }
            Some((_, Some(expected))) if expected != shape => {
                return Err(ModelError::ShapeMismatch { name: t.name.clone(), path: g.path().to_path_buf(), found: shape, expected });
            }
            Some(_) => {}
        }
        let mut values = g.tensor_f32(t)?;
        let heads = if name.contains(".q_proj.") {
            Some(hp.heads)
        } else if name.contains(".k_proj.") {
            Some(hp.kv_heads)
        } else {
            None
        };
        if let Some(n_head) = heads {
            // [n_head · d] or [n_head · d, in]: rows are the first dim.
            let row_len = shape[1..].iter().product::<usize>();
            if n_head == 0 || !shape[0].is_multiple_of(2 * n_head) {
                return Err(g.error(GgufError::BadShape {
                    tensor: t.name.clone(),
                    message: format!("{} rows do not split into {n_head} heads of rotary pairs", shape[0]),
                }));
            }
            values = unpermute_qk(&values, n_head, row_len);
        }
        out.push(HostTensor { name, shape, values, force_f32: false });
    }
    Ok(out)
}
