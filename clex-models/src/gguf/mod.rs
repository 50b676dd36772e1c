//! llama.cpp GGUF files as HF checkpoints: [`GgufFile`] reads the container,
//! [`dequantize`] turns ggml blocks into f32, [`llama`] maps LLaMA metadata and tensor
//! names to `config.json` and HF names, and [`tokenizer()`] builds the embedded tokenizer.
//!
//! A GGUF becomes an HF config and HF-named f32 host tensors, which the ordinary LLaMA
//! builder loads ([`crate::ModelSource`]); [`crate::convert_gguf`] writes it out as an HF
//! directory.

pub mod llama;
mod quant;
mod reader;
mod tokenizer;

pub use quant::{GgmlType, dequantize};
pub use reader::{GgufFile, GgufValue, TensorInfo};
pub use tokenizer::tokenizer;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::weights::Weights;

/// The model config of a GGUF (parsed from the `config.json` [`llama::hf_config`] makes).
pub fn config(g: &GgufFile) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(llama::hf_config(g)?, g.path())
}

/// The GGUF's tensors as a checkpoint of f32 host tensors under HF names.
pub fn checkpoint(g: &GgufFile) -> Result<Weights, ModelError> {
    Weights::from_host(g.path(), llama::hf_tensors(g)?)
}
