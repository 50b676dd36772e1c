//! Saving to an HF directory: `config.json` and `model.safetensors` with HF tensor names and
//! layouts, written atomically (temporary file, then rename), reloadable by [`crate::load_model`]
//! and by transformers (CLEX models with the official remote code next to them).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use burn::tensor::{DType, backend::Backend};
use safetensors::{Dtype, tensor::TensorView};

use crate::config::Architecture;
use crate::error::ModelError;
use crate::hf::HostTensor;
use crate::model::CausalLm;
use crate::{gpt_neox, llama};

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
    match model.config().arch {
        Architecture::Llama => llama::tensors(model),
        Architecture::GptNeox => gpt_neox::tensors(model),
    }
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
