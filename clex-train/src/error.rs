//! Errors of data preparation and training; each names the file, step or setting at fault.

use std::path::PathBuf;

/// A training-side failure.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when not line-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Tokenizer training, loading or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Not enough data for the requested setting.
    #[error("{0}")]
    NotEnoughData(String),
    /// Training diverged.
    #[error(
        "non-finite loss {loss} at step {step}; the run stopped without applying that update, and its last checkpoint ({checkpoint}) is the last good state"
    )]
    NonFinite {
        /// The micro-batch.
        step: usize,
        /// The loss seen.
        loss: f32,
        /// Where to resume from.
        checkpoint: String,
    },
    /// A model problem.
    #[error(transparent)]
    Model(#[from] clex_models::ModelError),
    /// A corpus or evaluation problem.
    #[error(transparent)]
    Eval(#[from] clex_eval::EvalError),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}
