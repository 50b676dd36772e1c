//! Errors of evaluation; each names the file, line or setting at fault.

use std::path::PathBuf;

/// An evaluation-side failure.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
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
    /// The request cannot be evaluated as asked (bad windows, lengths, buckets).
    #[error("{0}")]
    Invalid(String),
    /// A model problem.
    #[error(transparent)]
    Model(#[from] clex_models::ModelError),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io { path: path.to_path_buf(), source }
}
