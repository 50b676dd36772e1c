//! Loading an HF model directory: `config.json` plus `model.safetensors` or a sharded
//! `model.safetensors.index.json`.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, backend::Backend};

use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::model::CausalLm;
use crate::weights::Checkpoint;
use crate::{gpt_neox, llama};

/// Loads `dir` onto `device`, converting weights to `dtype` (CLEX parameters stay f32).
pub fn load_model<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        });
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let ck = Checkpoint::open_dir(dir)?;
    build(config, &ck, device, dtype)
}

/// Loads the weights of `dir` under a given (possibly edited) config, e.g. with another
/// rope scaling than the checkpoint's.
pub fn load_with_config<B: Backend>(config: ModelConfig, dir: &Path, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let ck = Checkpoint::open_dir(dir)?;
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

fn build<B: Backend>(config: ModelConfig, ck: &Checkpoint, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
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
