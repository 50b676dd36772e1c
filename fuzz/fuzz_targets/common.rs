//! What every target shares: the fuzz input written to a per-process file, since the
//! parsers under test read files (memory-mapped), as the programs do.

use std::path::PathBuf;

/// `data` in a file of this process (under /dev/shm when there is one), named `name`.
pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let path = dir.join(format!("clex-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, data).expect("writing the fuzz input");
    path
}
