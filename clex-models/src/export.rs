//! Saving to an HF directory: `config.json` and `model.safetensors` with HF tensor names and
//! layouts, written atomically (temporary file, then rename), reloadable by [`crate::ModelSource`]
//! and by transformers (CLEX models with the official remote code next to them); and a GGUF
//! file converted to one ([`convert_gguf`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use burn::tensor::{DType, backend::Backend};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::model::CausalLm;
use crate::source::ModelSource;
use crate::weights::HostTensor;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The model's tensors under HF names, in HF layout.
pub fn hf_tensors<B: Backend>(model: &CausalLm<B>) -> Vec<HostTensor> {
    crate::arch::hf_tensors(model)
}

fn encode(t: &HostTensor, dtype: DType) -> (Dtype, Vec<u8>) {
    match (t.force_f32, dtype) {
        (false, DType::BF16) => (Dtype::BF16, t.values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()),
        (false, DType::F16) => (Dtype::F16, t.values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
        _ => (Dtype::F32, t.values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

/// Saves `model` into `dir` (created if needed) as `config.json` + `model.safetensors`.
/// Weights are written in the model's dtype; CLEX parameters in f32.
pub fn save_model<B: Backend>(model: &CausalLm<B>, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dtype = model.embed.weight.val().dtype();
    let tensors = hf_tensors(model);
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let (d, bytes) = encode(t, dtype);
            (t.name.clone(), d, t.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = encoded
        .iter()
        .map(|(name, d, shape, bytes)| (name.clone(), TensorView::new(*d, shape.clone(), bytes).expect("shape and byte count agree")))
        .collect();
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let weights_path = dir.join("model.safetensors");
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Safetensors { path: weights_path.clone(), message: e.to_string() })?;
    write_atomic(&weights_path, &bytes)?;
    let mut config = model.config().raw.clone();
    if let Some(obj) = config.as_object_mut() {
        let name = match dtype {
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            _ => "float32",
        };
        obj.insert("torch_dtype".into(), name.into());
    }
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
    write_atomic(&dir.join("config.json"), text.as_bytes())
}

/// What [`convert_gguf`] wrote besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufConversion {
    /// Why `tokenizer.json` was not written, if it was not (e.g. a SentencePiece GGUF).
    pub tokenizer_skipped: Option<String>,
}

/// Writes the GGUF file `gguf` as an HF directory `out`: `config.json` and f32
/// `model.safetensors` (through [`save_model`], after building the model, so every tensor is
/// checked), plus `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`.
pub fn convert_gguf<B: Backend>(gguf: &Path, out: &Path, device: &B::Device) -> Result<GgufConversion, ModelError> {
    let source = ModelSource::open(gguf)?;
    let g = source.gguf().ok_or_else(|| ModelError::Invalid(format!("{}: not a GGUF file", gguf.display())))?;
    let model = source.load::<B>(device, DType::F32)?;
    save_model(&model, out)?;
    let cfg = model.config();
    let mut generation = json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids.first()});
    if let Some(pad) = cfg.raw.get("pad_token_id") {
        generation["pad_token_id"] = pad.clone();
    }
    write_json(&out.join("generation_config.json"), &generation)?;
    let tokenizer_skipped = match source.tokenizer() {
        Ok(tok) => {
            let text = tok.to_string(true).map_err(|e| ModelError::Invalid(format!("serialising the tokenizer: {e}")))?;
            write_atomic(&out.join("tokenizer.json"), text.as_bytes())?;
            write_json(&out.join("tokenizer_config.json"), &tokenizer_config(g, cfg)?)?;
            None
        }
        Err(e) => Some(e.to_string()),
    };
    Ok(GgufConversion { tokenizer_skipped })
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
    write_atomic(path, serde_json::to_string_pretty(v).expect("a JSON value serialises").as_bytes())
}
