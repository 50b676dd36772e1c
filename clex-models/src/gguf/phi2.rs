//! A llama.cpp Phi-2 GGUF (`general.architecture` `phi2`) as an HF Phi checkpoint:
//! `config.json` from the `phi2.*` metadata and tensors under transformers' Phi names. llama.cpp
//! runs Phi-2 with NeoX (rotate-half) rope, as HF does, so q/k rows are not permuted. Both
//! of llama.cpp's attention layouts are read: q/k/v apart (`attn_q`/`attn_k`/`attn_v`,
//! from transformers' Phi) and fused (`attn_qkv`, rows q, then k, then v, from the original
//! Microsoft checkpoint).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::llama::insert_special_token_ids;
use super::reader::GgufFile;
use crate::error::{GgufError, ModelError};
use crate::weights::HostTensor;

/// Per-layer GGUF tensor stems and their HF names (`{stem}.weight` / `.bias`).
const LAYER_TENSORS: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.dense"),
    ("ffn_up", "mlp.fc1"),
    ("ffn_down", "mlp.fc2"),
];

/// The HF name of a llama.cpp Phi-2 tensor (`attn_qkv` aside), if it has one.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    match stem {
        "token_embd" if suffix == "weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm" => return Some(format!("model.final_layernorm.{suffix}")),
        "output" => return Some(format!("lm_head.{suffix}")),
        _ => {}
    }
    let (layer, stem) = stem.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The `phi2.*` hyper-parameters the tensors need.
struct Hparams {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
}

fn hparams(g: &GgufFile) -> Result<Hparams, ModelError> {
    let hidden = g.u64_of("phi2.embedding_length")? as usize;
    let heads = g.u64_of("phi2.attention.head_count")? as usize;
    let kv_heads = g.u64_opt("phi2.attention.head_count_kv")?.map(|v| v as usize).unwrap_or(heads);
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(g.error(GgufError::BadValue {
            key: "phi2.attention.head_count".into(),
            message: format!("{heads} does not divide embedding_length {hidden}"),
        }));
    }
    Ok(Hparams { hidden, heads, kv_heads })
}

/// HF `config.json` (transformers' `phi`, plain RoPE) for the model in `g`.
pub fn hf_config(g: &GgufFile) -> Result<Value, ModelError> {
    let hp = hparams(g)?;
    let head_dim = hp.hidden / hp.heads;
    let rotary = g.u64_opt("phi2.rope.dimension_count")?.map(|v| v as usize).unwrap_or(head_dim);
    if rotary == 0 || rotary > head_dim || !rotary.is_multiple_of(2) {
        return Err(g.error(GgufError::BadValue {
            key: "phi2.rope.dimension_count".into(),
            message: format!("{rotary}: needs an even number of dims in 2..={head_dim} (the head size)"),
        }));
    }
    // transformers takes int(factor · head_dim) rotary dims: nudge the quotient up one ulp
    // where rounding would give one dim short.
    let mut factor = rotary as f64 / head_dim as f64;
    if ((factor * head_dim as f64) as usize) < rotary {
        factor = f64::from_bits(factor.to_bits() + 1);
    }
    // convert_hf_to_gguf.py writes feed_forward_length as 4 · n_embd; the tensor knows.
    let intermediate = match g.tensor("blk.0.ffn_up.weight") {
        Some(t) => t.shape()[0],
        None => g.u64_of("phi2.feed_forward_length")? as usize,
    };
    let vocab = match g.tensor("token_embd.weight") {
        Some(t) => t.shape()[0],
        None => return Err(g.error(GgufError::Unsupported("no tensor `token_embd.weight`".into()))),
    };
    let has = |name: &str| g.tensor(name).is_some();
    let mut c: BTreeMap<&str, Value> = BTreeMap::new();
    c.insert("architectures", json!(["PhiForCausalLM"]));
    c.insert("model_type", json!("phi"));
    c.insert("vocab_size", json!(vocab));
    c.insert("hidden_size", json!(hp.hidden));
    c.insert("intermediate_size", json!(intermediate));
    c.insert("num_hidden_layers", json!(g.u64_of("phi2.block_count")?));
    c.insert("num_attention_heads", json!(hp.heads));
    c.insert("num_key_value_heads", json!(hp.kv_heads));
    c.insert("max_position_embeddings", json!(g.u64_of("phi2.context_length")?));
    c.insert("layer_norm_eps", json!(g.f64_opt("phi2.attention.layer_norm_epsilon")?.unwrap_or(1e-5)));
    c.insert("partial_rotary_factor", json!(factor));
    c.insert("rope_theta", json!(g.f64_opt("phi2.rope.freq_base")?.unwrap_or(10000.0)));
    c.insert("rope_scaling", Value::Null);
    c.insert("hidden_act", json!("gelu_new"));
    c.insert("qk_layernorm", json!(false));
    c.insert("tie_word_embeddings", json!(!has("output.weight")));
    c.insert("torch_dtype", json!("float32"));
    insert_special_token_ids(g, &mut c)?;
    Ok(json!(c))
}

/// Every tensor of `g` under its HF Phi name, f32, in HF layout; a fused `attn_qkv` is split
/// into q, k and v.
pub fn hf_tensors(g: &GgufFile) -> Result<Vec<HostTensor>, ModelError> {
    let hp = hparams(g)?;
    let (q_rows, kv_rows) = (hp.hidden, hp.kv_heads * (hp.hidden / hp.heads));
    let mut out = Vec::with_capacity(g.tensors().len() + 4);
    for t in g.tensors() {
        let shape = t.shape();
        let values = g.tensor_f32(t)?;
        if let Some((layer, suffix)) =
            t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')).and_then(|(l, r)| Some((l, r.strip_prefix("attn_qkv.")?)))
        {
            let rows = q_rows + 2 * kv_rows;
            if shape[0] != rows {
                return Err(g.error(GgufError::BadShape {
                    tensor: t.name.clone(),
                    message: format!("{} rows; q, k and v need {q_rows} + 2·{kv_rows}", shape[0]),
                }));
            }
            let row_len = shape[1..].iter().product::<usize>();
            let mut start = 0;
            for (part, n) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
                let mut part_shape = shape.clone();
                part_shape[0] = n;
                let name = format!("model.layers.{layer}.self_attn.{part}.{suffix}");
                out.push(HostTensor {
                    name,
                    shape: part_shape,
                    values: values[start * row_len..(start + n) * row_len].to_vec(),
                    force_f32: false,
                });
                start += n;
            }
            continue;
        }
        let name = hf_name(&t.name)
            .ok_or_else(|| g.error(GgufError::Unsupported(format!("tensor `{}` has no counterpart in an HF Phi checkpoint", t.name))))?;
        out.push(HostTensor { name, shape, values, force_f32: false });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers_phi() {
        assert_eq!(hf_name("blk.3.attn_output.bias").unwrap(), "model.layers.3.self_attn.dense.bias");
        assert_eq!(hf_name("blk.0.ffn_up.weight").unwrap(), "model.layers.0.mlp.fc1.weight");
        assert_eq!(hf_name("output.bias").unwrap(), "lm_head.bias");
        assert_eq!(hf_name("output_norm.bias").unwrap(), "model.final_layernorm.bias");
        assert_eq!(hf_name("blk.0.ffn_gate.weight"), None);
    }
}
