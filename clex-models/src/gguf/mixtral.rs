//! A llama.cpp Mixtral GGUF (`general.architecture` `llama` with `llama.expert_count`) as an
//! HF Mixtral checkpoint: the LLaMA metadata and tensors ([`super::llama`]: names, q/k rows
//! back in HF order) plus the mixture: `ffn_gate_inp` (router) →
//! `block_sparse_moe.gate`, and the merged experts `ffn_gate_exps` / `ffn_up_exps` /
//! `ffn_down_exps` (`[experts, out, in]`) split into `experts.{e}.w1` / `w3` / `w2`. Older
//! files with one tensor per expert (`ffn_gate.{e}`, ...) are read too.

use serde_json::{Value, json};

use super::llama;
use super::reader::GgufFile;
use crate::error::{GgufError, ModelError};
use crate::weights::HostTensor;

/// Expert tensor stems and the HF name of each expert's part.
const EXPERT_PARTS: [(&str, &str); 3] = [("ffn_gate", "w1"), ("ffn_up", "w3"), ("ffn_down", "w2")];

/// Whether `g` is a mixture of experts (`llama.expert_count` > 0).
pub fn is_moe(g: &GgufFile) -> Result<bool, ModelError> {
    Ok(g.str_of("general.architecture")? == "llama" && g.u64_opt("llama.expert_count")?.is_some_and(|e| e > 0))
}

/// HF `config.json` (`mixtral`) for the model in `g`: LLaMA's, plus the experts.
pub fn hf_config(g: &GgufFile) -> Result<Value, ModelError> {
    let mut c = llama::hf_config(g)?;
    let experts = g.u64_of("llama.expert_count")?;
    let used = g.u64_of("llama.expert_used_count")?;
    let obj = c.as_object_mut().expect("hf_config makes an object");
    obj.insert("architectures".into(), json!(["MixtralForCausalLM"]));
    obj.insert("model_type".into(), json!("mixtral"));
    obj.insert("num_local_experts".into(), json!(experts));
    obj.insert("num_experts_per_tok".into(), json!(used));
    obj.insert("sliding_window".into(), Value::Null);
    for dense in ["mlp_bias", "attention_bias"] {
        obj.remove(dense);
    }
    Ok(c)
}

/// `blk.{layer}.{stem}.weight` → (layer, stem).
fn layer_stem(name: &str) -> Option<(usize, &str)> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, rest.strip_suffix(".weight")?))
}

/// Every tensor of `g` under its HF Mixtral name, f32, in HF layout.
pub fn hf_tensors(g: &GgufFile) -> Result<Vec<HostTensor>, ModelError> {
    let experts = g.u64_of("llama.expert_count")? as usize;
    let heads = g.u64_of("llama.attention.head_count")? as usize;
    let kv_heads = g.u64_opt("llama.attention.head_count_kv")?.map(|v| v as usize).unwrap_or(heads);
    let mut out = Vec::with_capacity(g.tensors().len() + 2 * experts);
    let moe = |layer: usize, rest: &str| format!("model.layers.{layer}.block_sparse_moe.{rest}");
    for t in g.tensors() {
        let shape = t.shape();
        let host = |name: String, shape: Vec<usize>, values: Vec<f32>| HostTensor { name, shape, values, force_f32: false };
        if let Some((layer, stem)) = layer_stem(&t.name) {
            if stem == "ffn_gate_inp" {
                out.push(host(moe(layer, "gate.weight"), shape, g.tensor_f32(t)?));
                continue;
            }
            // Merged experts, [experts, out, in].
            if let Some((_, hf)) = EXPERT_PARTS.iter().find(|(g, _)| stem.strip_suffix("_exps") == Some(g)) {
                if shape.len() != 3 || shape[0] != experts {
                    return Err(g.error(GgufError::BadShape {
                        tensor: t.name.clone(),
                        message: format!("shape {shape:?}; expected [{experts} (llama.expert_count), out, in]"),
                    }));
                }
                let values = g.tensor_f32(t)?;
                let per = shape[1] * shape[2];
                for (e, chunk) in values.chunks_exact(per).enumerate() {
                    out.push(host(moe(layer, &format!("experts.{e}.{hf}.weight")), shape[1..].to_vec(), chunk.to_vec()));
                }
                continue;
            }
            // One tensor per expert (older files): ffn_gate.{e}.
            if let Some((part, e)) = stem.split_once('.')
                && let Some((_, hf)) = EXPERT_PARTS.iter().find(|(g, _)| *g == part)
                && let Ok(e) = e.parse::<usize>()
            {
                out.push(host(moe(layer, &format!("experts.{e}.{hf}.weight")), shape, g.tensor_f32(t)?));
                continue;
            }
        }
        let name = llama::hf_name(&t.name).filter(|n| !n.contains(".mlp.")).ok_or_else(|| {
            g.error(GgufError::Unsupported(format!("tensor `{}` has no counterpart in an HF Mixtral checkpoint", t.name)))
        })?;
        let mut values = g.tensor_f32(t)?;
        let n_head = if name.contains(".q_proj.") {
            Some(heads)
        } else if name.contains(".k_proj.") {
            Some(kv_heads)
        } else {
            None
        };
        if let Some(n_head) = n_head {
            if n_head == 0 || !shape[0].is_multiple_of(2 * n_head) {
                return Err(g.error(GgufError::BadShape {
                    tensor: t.name.clone(),
                    message: format!("{} rows do not split into {n_head} heads of rotary pairs", shape[0]),
                }));
            }
            values = llama::unpermute_qk(&values, n_head, shape[1..].iter().product());
        }
        out.push(host(name, shape, values));
    }
    Ok(out)
}
