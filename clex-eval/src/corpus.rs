//! Documents for training and evaluation: `.jsonl` (optionally gzipped) with a `text` field,
//! plain text files, or directories of either; the deterministic document-level split; and
//! the corpus bundled with the repository.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{EvalError, io};

/// Which side of the split a document is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training documents.
    Train,
    /// Held-out documents.
    Validation,
}

/// One document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Stable id (`source/name` in the bundled corpus, the file path otherwise).
    pub id: String,
    /// The text.
    pub text: String,
}

impl Document {
    /// The fixed split: validation iff sha256(id) mod 10 == 0 (the rule the bundled corpus
    /// was made with), so every run and every tool agrees without a split file.
    pub fn split(&self) -> Split {
        split_of(&self.id)
    }
}

/// validation iff int(sha256(id)) % 10 == 0.
pub fn split_of(id: &str) -> Split {
    let digest = Sha256::digest(id.as_bytes());
    // A 256-bit number mod 10, folded byte by byte.
    let rem = digest.iter().fold(0u32, |acc, b| (acc * 256 + *b as u32) % 10);
    if rem == 0 { Split::Validation } else { Split::Train }
}

/// The corpus shipped in `data/corpus.jsonl.gz` (public-domain Shakespeare, Milton, KJV).
pub fn bundled_corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join("corpus.jsonl.gz")
}

#[derive(Deserialize)]
struct JsonDoc {
    id: Option<String>,
    text: Option<String>,
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut s = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_string(&mut s).map_err(io(path))?;
    } else {
        BufReader::new(file).read_to_string(&mut s).map_err(io(path))?;
    }
    Ok(s)
}

fn is_jsonl(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")
}

/// Reads documents from a `.jsonl`/`.jsonl.gz` file (one object per line with a `text`
/// field and optionally an `id`), a text file (one document), or a directory (every such
/// file below it, in sorted order).
pub fn read_documents(path: &Path) -> Result<Vec<Document>, EvalError> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = walk(path)?;
        entries.sort();
        let mut docs = Vec::new();
        for p in entries {
            docs.extend(read_documents(&p)?);
        }
        return Ok(docs);
    }
    let text = read_text(path)?;
    if !is_jsonl(path) {
        return Ok(vec![Document { id: path.display().to_string(), text }]);
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let d: JsonDoc =
            serde_json::from_str(line).map_err(|e| EvalError::Data { path: path.into(), line: i + 1, message: e.to_string() })?;
        let text =
            d.text.ok_or_else(|| EvalError::Data { path: path.into(), line: i + 1, message: "missing string field `text`".into() })?;
        let id = d.id.unwrap_or_else(|| format!("{}#{}", path.display(), i + 1));
        docs.push(Document { id, text });
    }
    Ok(docs)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = entry.map_err(io(dir))?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else if is_jsonl(&p) || p.extension().is_some_and(|e| e == "txt") {
            out.push(p);
        }
    }
    Ok(out)
}

/// Train and validation documents of `path`.
pub fn split_documents(docs: Vec<Document>) -> (Vec<Document>, Vec<Document>) {
    docs.into_iter().partition(|d| d.split() == Split::Train)
}
