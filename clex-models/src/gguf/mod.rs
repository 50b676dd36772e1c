//! llama.cpp GGUF files as HF checkpoints: [`GgufFile`] reads the container,
//! [`dequantize`] turns ggml blocks into f32, [`llama`] maps LLaMA metadata and tensor
//! names to `config.json` and HF names ([`mixtral`]: `llama` files with experts; [`phi2`]:
//! `phi2` files), and [`tokenizer()`] builds the embedded tokenizer.
//!
//! A GGUF becomes an HF config and HF-named f32 host tensors, which the ordinary LLaMA
//! builder loads ([`crate::ModelSource`]); [`crate::convert_gguf`] writes it out as an HF
//! directory.

pub mod llama;
pub mod mixtral;
pub mod phi2;
mod quant;
mod reader;
mod tokenizer;

pub use quant::{GgmlType, dequantize};
pub use reader::{GgufFile, GgufValue, TensorInfo};
pub use tokenizer::tokenizer;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::weights::Weights;

/// The GGUF metadata key each `config.json` key the `hf_config`s write comes from (`{arch}`:
/// `general.architecture`), so a config error names the key in the file.
const GGUF_KEYS: &[(&str, &str)] = &[
    ("vocab_size", "{arch}.vocab_size"),
    ("hidden_size", "{arch}.embedding_length"),
    ("intermediate_size", "{arch}.feed_forward_length"),
    ("num_hidden_layers", "{arch}.block_count"),
    ("num_attention_heads", "{arch}.attention.head_count"),
    ("num_key_value_heads", "{arch}.attention.head_count_kv"),
    ("head_dim", "{arch}.attention.key_length"),
    ("max_position_embeddings", "{arch}.context_length"),
    ("rms_norm_eps", "{arch}.attention.layer_norm_rms_epsilon"),
    ("rope_theta", "{arch}.rope.freq_base"),
    ("rope_scaling.factor", "{arch}.rope.scaling.factor"),
    ("rope_scaling.original_max_position_embeddings", "{arch}.rope.scaling.original_context_length"),
    ("bos_token_id", "tokenizer.ggml.bos_token_id"),
    ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ("pad_token_id", "tokenizer.ggml.padding_token_id"),
];

/// The model config of a GGUF (parsed from the `config.json` [`llama::hf_config`] makes);
/// errors name the GGUF key.
pub fn config(g: &GgufFile) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(hf_config(g)?, g.path()).map_err(|e| match e {
        ModelError::Config { path, source: clex_core::ConfigError::InvalidValue { key, value, accepted } } => {
            let arch = g.str_opt("general.architecture").ok().flatten().unwrap_or("llama");
            let key = match GGUF_KEYS.iter().find(|(hf, _)| *hf == key) {
                Some((hf, gguf)) => format!("{}` (config.json `{hf}", gguf.replace("{arch}", arch)),
                None => key,
            };
            ModelError::Config { path, source: clex_core::ConfigError::InvalidValue { key, value, accepted } }
        }
        e => e,
    })
}

/// The GGUF's tensors as a checkpoint of f32 host tensors under HF names, each checked
/// against the metadata's config before it is dequantised.
pub fn checkpoint(g: &GgufFile) -> Result<Weights, ModelError> {
    let config = config(g)?;
    let tensors = match g.str_of("general.architecture")? {
        "phi2" => phi2::hf_tensors(g)?,
        _ if mixtral::is_moe(g)? => mixtral::hf_tensors(g)?,
        _ => llama::hf_tensors_for(g, &config)?,
    };
    Weights::from_host(g.path(), tensors)
}

/// The `config.json` of a GGUF by its architecture: `phi2`, `llama` with experts (Mixtral),
/// or `llama`.
fn hf_config(g: &GgufFile) -> Result<serde_json::Value, ModelError> {
    match g.str_of("general.architecture")? {
        "phi2" => phi2::hf_config(g),
        _ if mixtral::is_moe(g)? => mixtral::hf_config(g),
        _ => llama::hf_config(g),
    }
}
