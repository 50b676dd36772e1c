//! A burn file recorder whose writes are atomic: the record goes to a temporary file that
//! is renamed over the target only once complete, so a run killed mid-write keeps its
//! previous checkpoint intact. Format: burn's named MessagePack, full precision.

use std::io::Write;
use std::path::PathBuf;

use burn::record::{FileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use serde::{Serialize, de::DeserializeOwned};

/// Named-MessagePack checkpoints (`.mpk`), full precision, written atomically.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder;

fn with_ext(mut p: PathBuf) -> PathBuf {
    p.set_extension("mpk");
    p
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let path = with_ext(file);
        let bytes = rmp_serde::encode::to_vec_named(&item).map_err(|e| RecorderError::Unknown(format!("{}: {e}", path.display())))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RecorderError::Unknown(format!("{}: {e}", parent.display())))?;
        }
        let tmp = path.with_extension("mpk.tmp");
        let err = |e: std::io::Error| RecorderError::Unknown(format!("{}: {e}", tmp.display()));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(|e| RecorderError::Unknown(format!("{}: {e}", path.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        let path = with_ext(file.clone());
        let bytes = std::fs::read(&path).map_err(|e| RecorderError::FileNotFound(format!("{}: {e}", path.display())))?;
        rmp_serde::from_slice(&bytes).map_err(|e| RecorderError::Unknown(format!("corrupt checkpoint {}: {e}", path.display())))
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// The newest epoch with a complete model, optimizer and scheduler checkpoint in `dir`.
pub fn latest_checkpoint(dir: &std::path::Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir.join("checkpoint")).ok()?;
    let epochs: Vec<usize> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("model-")?.strip_suffix(".mpk")?.parse().ok())
        .filter(|e| ["optim", "scheduler"].iter().all(|k| dir.join("checkpoint").join(format!("{k}-{e}.mpk")).exists()))
        .collect();
    epochs.into_iter().max()
}

/// Checks that the model, optimizer and scheduler records of `epoch` are complete
/// MessagePack documents, naming the first damaged file.
pub fn verify_checkpoint(dir: &std::path::Path, epoch: usize) -> Result<(), crate::TrainError> {
    for kind in ["model", "optim", "scheduler"] {
        let path = dir.join("checkpoint").join(format!("{kind}-{epoch}.mpk"));
        let bytes = std::fs::read(&path).map_err(crate::error::io(&path))?;
        rmp_serde::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| crate::TrainError::Data {
            path: path.clone(),
            line: 0,
            message: format!("corrupt checkpoint ({e}); delete it to resume from the one before"),
        })?;
    }
    Ok(())
}
