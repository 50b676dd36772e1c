//! A burn file recorder whose writes are atomic and durable: the record goes to a temporary
//! file in the same directory, is fsynced, renamed over the target only once complete, and
//! the directory is fsynced, so a run killed (or out of disk) mid-write keeps its previous
//! checkpoint intact. A failed write is kept for the trainer to report (burn-train only
//! stops the run on it). Format: burn's named MessagePack, full precision.
//!
//! burn-train writes `model-E`, `optim-E` and `scheduler-E` on three threads and deletes
//! epoch E-2 only after writing E, so checkpoint E-1 is complete while E is written, and an
//! epoch counts only once all three files exist ([`latest_checkpoint`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::record::{FileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use serde::{Serialize, de::DeserializeOwned};

/// Named-MessagePack checkpoints (`.mpk`), full precision, written atomically.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder {
    /// The first failed write (checkpoint epoch, file and error), shared by every clone.
    failure: Arc<Mutex<Option<(usize, String)>>>,
}

impl AtomicRecorder {
    /// The first write that failed in this recorder or its clones: the checkpoint (epoch)
    /// and the file with its error.
    pub fn failure(&self) -> Option<(usize, String)> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    fn fail(&self, path: &Path, e: std::io::Error) -> RecorderError {
        // burn-train names checkpoint files `<kind>-<epoch>` (+ `.mpk`, `.mpk.tmp`).
        let epoch = path.file_name().and_then(|s| s.to_str()?.split('.').next()?.rsplit('-').next()?.parse().ok()).unwrap_or(0);
        let message = format!("{}: {e}", path.display());
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert((epoch, message.clone()));
        }
        RecorderError::Unknown(message)
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of `bytes`,
/// also after a crash or power loss: a sibling temporary file, fsync, rename, fsync of the
/// directory. On failure the temporary file is removed (a full disk gets its space back).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err((tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))?;
    std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| (parent.to_path_buf(), e))
}

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
            std::fs::create_dir_all(parent).map_err(|e| self.fail(parent, e))?;
        }
        write_durable(&path, &bytes).map_err(|(file, e)| self.fail(&file, e))
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

/// Removes what a crashed or failed run may have left in `dir/checkpoint` that a run
/// starting after checkpoint `keep` (0: from scratch) must not mix with its own: temporary
/// files, and the files of later epochs (an incomplete epoch, or a longer earlier run's).
/// Returns how many files were removed.
pub fn discard_after(dir: &Path, keep: usize) -> Result<usize, crate::TrainError> {
    let ck = dir.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&ck) else { return Ok(0) };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(crate::error::io(&ck))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let later = ["model-", "optim-", "scheduler-"].iter().any(|k| {
            name.strip_prefix(k).and_then(|r| r.strip_suffix(".mpk")).and_then(|e| e.parse::<usize>().ok()).is_some_and(|e| e > keep)
        });
        if later || name.ends_with(".tmp") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(crate::error::io(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_after_keeps_the_resumed_checkpoint_and_those_before() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoint");
        std::fs::create_dir_all(&ck).unwrap();
        let names = ["model-1.mpk", "optim-1.mpk", "scheduler-1.mpk", "model-2.mpk", "optim-2.mpk", "scheduler-2.mpk"];
        // Left by a crash during checkpoint 3, and by an earlier, longer run.
        let stale = ["model-3.mpk", "scheduler-3.mpk", "optim-3.mpk.tmp", "model-12.mpk", "optim-12.mpk", "scheduler-12.mpk"];
        for n in names.iter().chain(&stale) {
            std::fs::write(ck.join(n), b"x").unwrap();
        }
        std::fs::write(ck.join("notes.txt"), b"x").unwrap();
        assert_eq!(discard_after(dir.path(), 2).unwrap(), stale.len());
        let mut left: Vec<String> = std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).chain(["notes.txt".to_string()]).collect();
        want.sort();
        assert_eq!(left, want);
        assert_eq!(latest_checkpoint(dir.path()), Some(2));
        // From scratch: every checkpoint goes.
        assert_eq!(discard_after(dir.path(), 0).unwrap(), names.len());
        assert_eq!(latest_checkpoint(dir.path()), None);
    }

    #[test]
    fn a_failed_durable_write_keeps_the_old_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model-1.mpk");
        write_durable(&path, b"old").unwrap();
        // The temporary file's name taken by a directory: creating it fails.
        std::fs::create_dir(dir.path().join("model-1.mpk.tmp")).unwrap();
        let (file, _) = write_durable(&path, b"new").unwrap_err();
        assert_eq!(file, dir.path().join("model-1.mpk.tmp"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        std::fs::remove_dir(dir.path().join("model-1.mpk.tmp")).unwrap();
        write_durable(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
