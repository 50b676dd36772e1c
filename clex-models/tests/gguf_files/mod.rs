//! GGUF files for the tests: a small writer (well-formed by default, every field overridable
//! so malformed files can be made on purpose), and where the downloaded SmolLM2 GGUF lives.
//! Shared with clex-cli's tests (`#[path]` from clex-cli/tests/common/mod.rs), so it needs
//! nothing beyond std.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// GGUF metadata value type ids.
pub const U32: u32 = 4;
pub const I32: u32 = 5;
pub const F32: u32 = 6;
pub const BOOL: u32 = 7;
pub const STRING: u32 = 8;
pub const ARRAY: u32 = 9;
pub const U64: u32 = 10;

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

/// One tensor to write.
pub struct Tensor {
    pub name: String,
    /// ggml order: innermost first.
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Written instead of the computed offset.
    pub offset: Option<u64>,
}

/// A GGUF under construction.
pub struct Writer {
    pub magic: [u8; 4],
    pub version: u32,
    pub alignment: u64,
    pub kvs: Vec<(String, u32, Vec<u8>)>,
    pub tensors: Vec<Tensor>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer { magic: *b"GGUF", version: 3, alignment: 32, kvs: Vec::new(), tensors: Vec::new() }
    }
}

impl Writer {
    pub fn raw(&mut self, key: &str, type_id: u32, value: Vec<u8>) -> &mut Self {
        self.kvs.push((key.into(), type_id, value));
        self
    }

    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw(key, U32, v.to_le_bytes().to_vec())
    }

    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw(key, F32, v.to_le_bytes().to_vec())
    }

    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.raw(key, BOOL, vec![v as u8])
    }

    pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
        self.raw(key, STRING, string(v))
    }

    pub fn strs(&mut self, key: &str, v: &[String]) -> &mut Self {
        let mut b = STRING.to_le_bytes().to_vec();
        b.extend((v.len() as u64).to_le_bytes());
        for s in v {
            b.extend(string(s));
        }
        self.raw(key, ARRAY, b)
    }

    pub fn i32s(&mut self, key: &str, v: &[i32]) -> &mut Self {
        let mut b = I32.to_le_bytes().to_vec();
        b.extend((v.len() as u64).to_le_bytes());
        for x in v {
            b.extend(x.to_le_bytes());
        }
        self.raw(key, ARRAY, b)
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor { name: name.into(), dims: dims.to_vec(), type_id, data, offset: None });
        self
    }

    /// An f32 tensor from row-major values of `shape` (written with ggml's reversed dims).
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensor(name, &dims, 0, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn align(&self, n: u64) -> u64 {
        n.div_ceil(self.alignment) * self.alignment
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.magic.to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kvs {
            out.extend(string(k));
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            out.extend(string(&t.name));
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(t.offset.unwrap_or(offset).to_le_bytes());
            offsets.push(offset);
            offset = self.align(offset + t.data.len() as u64);
        }
        let start = self.align(out.len() as u64);
        out.resize(start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.bytes()).unwrap();
        path
    }
}

/// The cache directory `cargo xtask fetch-smollm2` uses (xtask/src/fetch_smollm2.rs):
/// `$CLEX_CACHE`, else `$XDG_CACHE_HOME/clex-rs`, else `~/.cache/clex-rs`.
fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("CLEX_CACHE").or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("clex-rs"))).or_else(|| env("HOME").map(|h| h.join(".cache/clex-rs")))
}

/// The SmolLM2 GGUF: `$CLEX_SMOLLM2_GGUF`, else where xtask puts it. Err: why not, for the
/// skip message.
pub fn smollm2_gguf() -> Result<PathBuf, String> {
    let path = match std::env::var_os("CLEX_SMOLLM2_GGUF").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            cache_dir().ok_or("no CLEX_CACHE, XDG_CACHE_HOME or HOME to find the cache in")?.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    if path.is_file() { Ok(path) } else { Err(format!("SmolLM2 GGUF not found at {}; run `cargo xtask fetch-smollm2`", path.display())) }
}

/// The SmolLM2 GGUF for a test, or None (with the reason printed) when it is absent. Cargo
/// hides that line, so a skip would look like a pass: `CLEX_REQUIRE_SMOLLM2=1` (set by
/// `.ci/run`, which fetches the GGUF) makes it a failure.
pub fn smollm2() -> Option<PathBuf> {
    match smollm2_gguf() {
        Ok(p) => Some(p),
        Err(why) => {
            let required = std::env::var("CLEX_REQUIRE_SMOLLM2").as_deref() == Ok("1");
            assert!(!required, "CLEX_REQUIRE_SMOLLM2=1 but {why}");
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// −log softmax(row)[target] in f64 (NaN if the row holds a NaN: it reaches the sum).
pub fn nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() - row[target] as f64
}
