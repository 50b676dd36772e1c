//! What several subcommands share: flag parsing, model and tokenizer loading (HF directory
//! or GGUF file, with an optional rope override), token tensors, logits rows.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use clex_core::{ClexAct, ClexParams};
use clex_models::backend::Inference;
use clex_models::gguf::{self, GgufFile};
use clex_models::{CachePolicy, CausalLm, ModelConfig, attach_fresh_clex, load_with_config, read_config};
use tokenizers::Tokenizer;

/// `--dtype f32|f16|bf16`.
pub fn parse_dtype(s: &str) -> anyhow::Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("--dtype {other}: accepted values: f32, f16, bf16"),
    })
}

/// `--cache-policy reference|recompute`.
pub fn parse_cache_policy(s: &str) -> anyhow::Result<CachePolicy> {
    Ok(match s {
        "reference" => CachePolicy::Reference,
        "recompute" => CachePolicy::Recompute,
        other => bail!("--cache-policy {other}: accepted values: reference, recompute"),
    })
}

/// Fails with the path when `path` is neither a model directory nor a (GGUF) file.
pub fn require_model(path: &Path) -> anyhow::Result<()> {
    if !path.is_dir() && !path.is_file() {
        bail!("{}: model directory or .gguf file not found", path.display());
    }
    Ok(())
}

/// A `tokenizer.json`, errors naming the file.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The tokenizer of `model`: `explicit` if given, else `MODEL/tokenizer.json` for a
/// directory or the one embedded in a GGUF. Also returns where it came from, for messages.
pub fn model_tokenizer(model: &Path, explicit: Option<&Path>) -> anyhow::Result<(Tokenizer, String)> {
    if let Some(p) = explicit {
        return Ok((load_tokenizer(p)?, p.display().to_string()));
    }
    if model.is_file() {
        let tok = gguf::tokenizer(&GgufFile::open(model)?)?;
        return Ok((tok, format!("{} (embedded)", model.display())));
    }
    let p = model.join("tokenizer.json");
    Ok((load_tokenizer(&p)?, p.display().to_string()))
}

/// Whether sequences start with BOS unless a flag says otherwise: as
/// `tokenizer.ggml.add_bos_token` says for a GGUF (llama.cpp's switch; SmolLM2's is false),
/// as `add_bos_token` in an HF directory's tokenizer_config.json, else true (the LLaMA
/// convention).
pub fn default_bos(model: &Path) -> anyhow::Result<bool> {
    if model.is_file() {
        return Ok(GgufFile::open(model)?.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false));
    }
    let path = model.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(true) };
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    Ok(v.get("add_bos_token").and_then(serde_json::Value::as_bool).unwrap_or(true))
}

/// `--rope-scaling KIND [--rope-factor F] [--rope-p P]`: run a model under another rope
/// than its checkpoint's, e.g. to compare length extrapolation methods on one model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RopeOverride {
    /// Non-CLEX models: override the rope scaling: none | linear | dynamic | yarn | clex
    /// (clex attaches a fresh, untrained CLEX layer: θ(t) is NTK scaling with α = 2t − 1).
    #[arg(long)]
    pub rope_scaling: Option<String>,
    /// Factor for --rope-scaling (for clex: T_max, the largest scaling factor t).
    #[arg(long, default_value_t = 2.0)]
    pub rope_factor: f64,
    /// P, the length scaling starts from (max_position_embeddings; default: the model's).
    #[arg(long)]
    pub rope_p: Option<usize>,
}

impl RopeOverride {
    /// `config` with the override applied, and the CLEX layer to attach after loading.
    fn apply(&self, config: ModelConfig, model: &Path) -> anyhow::Result<(ModelConfig, Option<ClexParams>)> {
        let Some(kind) = &self.rope_scaling else {
            if self.rope_p.is_some() {
                bail!("--rope-p needs --rope-scaling");
            }
            return Ok((config, None));
        };
        if config.is_clex() {
            bail!("--rope-scaling: {} is a CLEX model; its rope is learned and cannot be overridden", model.display());
        }
        let (block, clex) = match kind.as_str() {
            "none" => (serde_json::Value::Null, None),
            "linear" | "dynamic" | "yarn" => (serde_json::json!({"type": kind, "factor": self.rope_factor}), None),
            "clex" => {
                if self.rope_factor < 1.0 || self.rope_factor.fract() != 0.0 {
                    bail!("--rope-factor {}: for clex it is T_max, a whole number ≥ 1", self.rope_factor);
                }
                let params = ClexParams { max_factor: self.rope_factor as usize, param_factor: 1, act: ClexAct::Tanh, time_dt: 0.01 };
                (serde_json::Value::Null, Some(params))
            }
            other => bail!("--rope-scaling {other}: accepted values: none, linear, dynamic, yarn, clex"),
        };
        let mut raw = config.raw.clone();
        // The config's own factor, looked up where clex-core's parser looks (the rope block
        // transformers 5 keeps it in, then the top level, then GPT-NeoX's rotary_pct), carried
        // over as written: re-deriving it as rotary_dim / head_dim can come back one dim
        // short (58 / 100 · 100 = 57.99999999999999).
        let rope_block = if raw.get("rope_parameters").is_some() { "/rope_parameters" } else { "/rope_scaling" };
        let factor = [format!("{rope_block}/partial_rotary_factor"), "/partial_rotary_factor".into(), "/rotary_pct".into()]
            .iter()
            .find_map(|k| raw.pointer(k).filter(|v| v.is_number()).cloned());
        if let Some(o) = raw.as_object_mut() {
            o.remove("rope_parameters");
            if config.rope.rotary_dim != config.rope.head_dim {
                let derived = config.rope.rotary_dim as f64 / config.rope.head_dim as f64;
                o.insert("partial_rotary_factor".into(), factor.unwrap_or_else(|| derived.into()));
            }
            o.insert("rope_theta".into(), config.rope.theta.into());
            o.insert("rope_scaling".into(), block);
            if let Some(p) = self.rope_p {
                o.insert("max_position_embeddings".into(), p.into());
            }
        }
        Ok((ModelConfig::from_json(raw, model)?, clex))
    }
}

/// A model to load (HF directory or GGUF file): its config, with any rope override applied.
pub struct ModelSpec {
    path: PathBuf,
    /// The config the model will be built with (before a fresh CLEX layer is attached).
    pub config: ModelConfig,
    clex: Option<ClexParams>,
}

impl ModelSpec {
    /// Reads the config of `path` and applies `rope`.
    pub fn read(path: &Path, rope: &RopeOverride) -> anyhow::Result<Self> {
        require_model(path)?;
        let (config, clex) = rope.apply(read_config(path)?, path)?;
        Ok(ModelSpec { path: path.to_path_buf(), config, clex })
    }

    /// Loads the weights (dequantising a GGUF) and attaches the fresh CLEX layer, if any.
    pub fn load(self, device: &Device<Inference>, dtype: DType) -> anyhow::Result<CausalLm<Inference>> {
        let model = load_with_config::<Inference>(self.config, &self.path, device, dtype)?;
        Ok(match self.clex {
            Some(params) => attach_fresh_clex(model, params).with_context(|| format!("attaching CLEX to {}", self.path.display()))?,
            None => model,
        })
    }
}

/// Loads `path` with its own rope.
pub fn load_model(path: &Path, device: &Device<Inference>, dtype: DType) -> anyhow::Result<CausalLm<Inference>> {
    ModelSpec::read(path, &RopeOverride::default())?.load(device, dtype)
}

/// Token ids as a `[1, n]` tensor.
pub fn ids_tensor(ids: &[u32], device: &Device<Inference>) -> Tensor<Inference, 2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}

/// The last row of `[1, seq, vocab]` logits, on the host.
pub fn last_row(logits: Tensor<Inference, 3>) -> anyhow::Result<Vec<f32>> {
    let [_, s, vocab] = logits.dims();
    logits.narrow(1, s - 1, 1).reshape([vocab]).into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::RopeOverride;
    use clex_models::ModelConfig;
    use std::path::Path;

    fn config(extra: serde_json::Value) -> ModelConfig {
        let mut raw = serde_json::json!({"model_type": "llama", "vocab_size": 256, "hidden_size": 200, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128});
        raw.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ModelConfig::from_json(raw, Path::new("config.json")).unwrap()
    }

    /// --rope-scaling keeps the config's partial rotary factor as written (here inside
    /// rope_parameters, where transformers 5 puts it, and one whose product is not whole:
    /// 100 · 0.585 → 58 dims, as transformers' int()), and adds none for full rotary.
    #[test]
    fn rope_override_carries_the_partial_rotary_factor() {
        let over = RopeOverride { rope_scaling: Some("linear".into()), rope_factor: 4.0, rope_p: None };
        let partial = config(serde_json::json!({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.585}}));
        assert_eq!((partial.rope.head_dim, partial.rope.rotary_dim), (100, 58));
        let (c, _) = over.apply(partial, Path::new("m")).unwrap();
        assert_eq!((c.rope.head_dim, c.rope.rotary_dim, c.rope.scaling.kind()), (100, 58, "linear"));
        assert_eq!(c.raw["partial_rotary_factor"], 0.585);
        let full = config(serde_json::json!({}));
        let (c, _) = over.apply(full, Path::new("m")).unwrap();
        assert_eq!((c.rope.rotary_dim, c.raw.get("partial_rotary_factor")), (100, None));
    }
}
