//! Loading a model: an HF directory (`config.json` plus `model.safetensors` or a sharded
//! `model.safetensors.index.json`), or a llama.cpp `.gguf` file (any path that is a file).

use std::path::{Path, PathBuf};

use burn::tensor::{DType, backend::Backend};

use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::gguf::{self, GgufFile};
use crate::model::CausalLm;
use crate::weights::Checkpoint;
use crate::{gpt_neox, llama};

/// Loads `path` (an HF directory or a GGUF file) onto `device`, converting weights to
/// `dtype` (CLEX parameters stay f32).
pub fn load_model<B: Backend>(path: &Path, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    if path.is_file() {
        let g = GgufFile::open(path)?;
        return build(gguf::config(&g)?, &gguf::checkpoint(&g)?, device, dtype);
    }
    let config = read_config(path)?;
    let ck = Checkpoint::open_dir(path)?;
    build(config, &ck, device, dtype)
}

/// The config of `path`: `config.json` of an HF directory, or the one a GGUF's metadata
/// implies.
pub fn read_config(path: &Path) -> Result<ModelConfig, ModelError> {
    if path.is_file() {
        return gguf::config(&GgufFile::open(path)?);
    }
    if !path.is_dir() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory or .gguf file not found"),
        });
    }
    ModelConfig::from_file(&path.join("config.json"))
}

/// Loads the weights of `path` (HF directory or GGUF) under a given (possibly edited)
/// config, e.g. with another rope scaling than the checkpoint's.
pub fn load_with_config<B: Backend>(config: ModelConfig, path: &Path, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let ck = if path.is_file() { gguf::checkpoint(&GgufFile::open(path)?)? } else { Checkpoint::open_dir(path)? };
    build(config, &ck, device, dtype)
}

/// Loads from an explicit config file and safetensors files (e.g. one weights file shared
/// by several configs).
pub fn load_from_files<B: Backend>(
    config: &Path,
    weights: &[PathBuf],
    device: &B::Device,
    dtype: DType,
) -> Result<CausalLm<B>, ModelError> {
    let config = ModelConfig::from_file(config)?;
    let ck = Checkpoint::open(weights)?;
    build(config, &ck, device, dtype)
}

pub(crate) fn build<B: Backend>(config: ModelConfig, ck: &Checkpoint, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let arch = config.arch;
    let model = match arch {
        Architecture::Llama => llama::load(config, ck, device, dtype)?,
        Architecture::GptNeox => gpt_neox::load(config, ck, device, dtype)?,
    };
    let unused = ck.unused();
    if !unused.is_empty() {
        let mut names = unused.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if unused.len() > 8 {
            names.push_str(&format!(" (and {} more)", unused.len() - 8));
        }
        return Err(ModelError::UnexpectedTensors { arch: arch.model_type().into(), names });
    }
    Ok(model)
}
