//! One training process per run directory: an OS advisory lock (`flock` on Linux, through
//! std's `File::try_lock`) on `<run>/train.lock`, held for the whole run. The OS drops the
//! lock when its holder exits in any way, `kill -9` included, so a crashed run never leaves
//! a stale lock behind; the file's text (pid, start time) only names the holder in the
//! refusal message and is never trusted for the decision itself.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::error::io;

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "train.lock";

/// Holds a run directory's lock until dropped (or until the process dies).
#[derive(Debug)]
pub struct RunLock {
    // Never read: the open file is what holds the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist) without waiting; a directory already
    /// held by a live process gives [`TrainError::RunInUse`] naming it and its holder.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, TrainError> {
        let path = run_dir.join(LOCK_FILE);
        // Not truncated on open: the current holder's text must survive a refused attempt.
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be between taking the lock and writing its line.
                let _ = file.read_to_string(&mut text);
                let holder =
                    text.lines().next().map(str::trim).filter(|l| !l.is_empty()).unwrap_or("a process that has not named itself yet");
                return Err(TrainError::RunInUse { dir: run_dir.to_path_buf(), holder: clip(holder, 200) });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::Io { path, source: e }),
        }
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let line = format!("pid {}, started at unix time {since}\n", std::process::id());
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(line.as_bytes())
        })()
        .map_err(io(&path))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `s` cut to at most `max` bytes at a char boundary (a lock file is not ours to trust).
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_with_its_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to an open file, so a second open in this process conflicts
        // as another process's would.
        let e = RunLock::acquire(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, TrainError::RunInUse { .. }), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()) && msg.contains(&format!("pid {},", std::process::id())), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        // A refused attempt leaves the holder's line in place.
        assert!(std::fs::read_to_string(first.path()).unwrap().starts_with("pid "));
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn an_unlocked_lock_file_left_by_a_dead_run_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed run leaves: its text, but no lock (the OS dropped it).
        std::fs::write(dir.path().join(LOCK_FILE), "pid 999999999, started at unix time 0\n").unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert!(std::fs::read_to_string(lock.path()).unwrap().starts_with(&format!("pid {},", std::process::id())));
    }
}
