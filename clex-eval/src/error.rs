//! Errors of evaluation; each names the file, line or setting at fault.

use std::path::PathBuf;

/// An evaluation-side failure.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
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
    /// A model problem, or a file that could not be read (one I/O error type for the
    /// workspace: [`clex_models::ModelError::Io`]).
    #[error(transparent)]
    Model(#[from] clex_models::ModelError),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Model(clex_models::ModelError::Io { path: path.to_path_buf(), source })
}
