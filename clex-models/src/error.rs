//! Errors of model loading, saving and running. Each names the file, key or tensor at fault.

use std::path::PathBuf;

use clex_core::{ClexError, ConfigError};

/// Everything that can go wrong with a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` (or the index) is not valid JSON.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A config key is missing or wrong.
    #[error("{path}: {source}")]
    Config {
        /// The config file (or `<in memory>`).
        path: PathBuf,
        /// The problem.
        source: ConfigError,
    },
    /// `model_type` is not one we implement.
    #[error("{path}: unsupported model_type `{found}`; accepted values: llama, mistral, gpt_neox")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The model_type found.
        found: String,
    },
    /// A safetensors file is malformed (truncated, bad header, unsupported dtype).
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{name}` (expected shape {expected:?}) in {files}")]
    MissingTensor {
        /// HF tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The files searched.
        files: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` in {path} has shape {found:?}, but the config implies {expected:?}")]
    ShapeMismatch {
        /// HF tensor name.
        name: String,
        /// The file holding it.
        path: PathBuf,
        /// Shape on disk.
        found: Vec<usize>,
        /// Shape expected.
        expected: Vec<usize>,
    },
    /// The checkpoint holds tensors this architecture does not use.
    #[error("unexpected tensors in the checkpoint (not part of this {arch} model): {names}")]
    UnexpectedTensors {
        /// The architecture.
        arch: String,
        /// Comma-separated names (first few).
        names: String,
    },
    /// A CLEX-level problem.
    #[error(transparent)]
    Clex(#[from] ClexError),
    /// A bad request at run time (e.g. token count, cache mismatch).
    #[error("{0}")]
    Invalid(String),
}
