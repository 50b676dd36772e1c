//! llama.cpp GGUF files as HF checkpoints: [`GgufFile`] reads the container,
//! [`dequantize`] turns ggml blocks into f32, [`llama`] maps LLaMA metadata and tensor
//! names to `config.json` and HF names, and [`tokenizer()`] builds the embedded tokenizer.
//!
//! A GGUF becomes an in-memory HF checkpoint (config + HF-named f32 tensors), which the
//! ordinary LLaMA builder loads; [`convert`] writes it out as an HF directory.

pub mod llama;
mod quant;
mod reader;
mod tokenizer;

use std::path::Path;

use burn::tensor::{DType, backend::Backend};
use serde_json::{Value, json};

pub use quant::{GgmlType, dequantize};
pub use reader::{GgufFile, GgufValue, TensorInfo};
pub use tokenizer::tokenizer;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::weights::Checkpoint;

/// The model config of a GGUF (parsed from the `config.json` [`llama::hf_config`] makes).
pub fn config(g: &GgufFile) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(llama::hf_config(g)?, g.path())
}

/// The GGUF's tensors as a checkpoint under HF names (dequantised to f32).
pub fn checkpoint(g: &GgufFile) -> Result<Checkpoint, ModelError> {
    Checkpoint::from_tensors(g.path(), llama::hf_tensors(g)?)
}

/// What [`convert`] wrote besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// Why `tokenizer.json` was not written, if it was not (e.g. a SentencePiece GGUF).
    pub tokenizer_skipped: Option<String>,
}

/// Writes `gguf` as an HF directory `out`: `config.json` and f32 `model.safetensors` (through
/// [`crate::save_model`], after building the model, so every tensor is checked), plus
/// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`.
pub fn convert<B: Backend>(gguf: &Path, out: &Path, device: &B::Device) -> Result<Converted, ModelError> {
    let g = GgufFile::open(gguf)?;
    let model = crate::loader::build::<B>(config(&g)?, &checkpoint(&g)?, device, DType::F32)?;
    crate::save_model(&model, out)?;
    let cfg = model.config();
    let mut generation = json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids.first()});
    if let Some(pad) = cfg.raw.get("pad_token_id") {
        generation["pad_token_id"] = pad.clone();
    }
    write_json(&out.join("generation_config.json"), &generation)?;
    let tokenizer_skipped = match tokenizer(&g) {
        Ok(tok) => {
            let text = tok.to_string(true).map_err(|e| ModelError::Invalid(format!("serialising the tokenizer: {e}")))?;
            crate::write_atomic(&out.join("tokenizer.json"), text.as_bytes())?;
            write_json(&out.join("tokenizer_config.json"), &tokenizer_config(&g, cfg)?)?;
            None
        }
        Err(e) => Some(e.to_string()),
    };
    Ok(Converted { tokenizer_skipped })
}

/// `tokenizer_config.json`: the special tokens by text, no BOS added unless the GGUF says
/// so, and the chat template, so transformers loads the same tokenizer.
fn tokenizer_config(g: &GgufFile, cfg: &ModelConfig) -> Result<Value, ModelError> {
    let tokens = g.strings_of("tokenizer.ggml.tokens")?;
    let text = |key: &str| -> Result<Value, ModelError> {
        Ok(g.u64_opt(&format!("tokenizer.ggml.{key}"))?.and_then(|id| tokens.get(id as usize)).map_or(Value::Null, |t| json!(t)))
    };
    Ok(json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text("bos_token_id")?,
        "eos_token": text("eos_token_id")?,
        "unk_token": text("unknown_token_id")?,
        "pad_token": text("padding_token_id")?,
        "add_bos_token": g.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
        "add_eos_token": g.bool_opt("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        "chat_template": g.str_opt("tokenizer.chat_template")?,
        "model_max_length": cfg.rope.max_position_embeddings,
    }))
}

fn write_json(path: &Path, v: &Value) -> Result<(), ModelError> {
    crate::write_atomic(path, serde_json::to_string_pretty(v).expect("a JSON value serialises").as_bytes())
}
