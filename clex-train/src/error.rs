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
    /// Another process holds the run directory's lock.
    #[error("{dir}: in use by another training run ({holder}); wait for it to end or stop it, then retry")]
    RunInUse {
        /// The run directory.
        dir: PathBuf,
        /// The holder as its lock file names it (pid, start time).
        holder: String,
    },
    /// A checkpoint could not be written (full disk, quota, I/O error). The run stopped;
    /// the checkpoint before it is untouched.
    #[error("checkpoint {epoch} not written: {message}; the run stopped, {kept}")]
    CheckpointWrite {
        /// The checkpoint (burn-train epoch) being written.
        epoch: usize,
        /// The file and the OS error.
        message: String,
        /// What is left to resume from.
        kept: String,
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
