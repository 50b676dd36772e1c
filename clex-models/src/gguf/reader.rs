//! The GGUF container (versions 2 and 3, little-endian), as ggml's `docs/gguf.md` defines it:
//!
//! ```text
//! "GGUF" | version: u32 | n_tensors: u64 | n_kv: u64
//! n_kv × (key: string, type: u32, value)          string = len: u64 + UTF-8 bytes
//! n_tensors × (name: string, n_dims: u32, dims: u64 × n_dims, type: u32, offset: u64)
//! padding to `general.alignment` (default 32) | data section (offsets are relative to it)
//! ```
//!
//! Everything is bounds-checked before use; a malformed file gives a [`GgufError`] naming
//! the key or tensor, never a panic or an allocation sized by garbage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::quant::{GgmlType, dequantize};
use crate::error::{GgufError, ModelError};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted (llama.cpp writes 32).
const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Nesting limit for arrays of arrays (the spec allows them; nothing real nests deeper).
const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// uint8.
    U8(u8),
    /// int8.
    I8(i8),
    /// uint16.
    U16(u16),
    /// int16.
    I16(i16),
    /// uint32.
    U32(u32),
    /// int32.
    I32(i32),
    /// float32.
    F32(f32),
    /// bool (one byte, 0 or 1).
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of one element type.
    Array(Vec<GgufValue>),
    /// uint64.
    U64(u64),
    /// int64.
    I64(i64),
    /// float64.
    F64(f64),
}

impl GgufValue {
    /// A non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number (float or integer) as f64; an f32 is widened exactly.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            GgufValue::I8(v) => Some(v as f64),
            GgufValue::I16(v) => Some(v as f64),
            GgufValue::I32(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The GGUF type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::F32(_) => "float32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F64(_) => "float64",
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (llama.cpp naming, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// ggml dims, innermost (contiguous) first: an HF `[out, in]` weight is `[in, out]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Start of its data, relative to the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Row-major shape (the dims reversed), as HF and burn write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of values (checked when the file is opened).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data (whole blocks; checked when the file is opened).
    pub fn n_bytes(&self) -> u64 {
        self.n_elements() / self.ggml_type.block_size() as u64 * self.ggml_type.type_size() as u64
    }
}

/// An opened, validated GGUF file: metadata parsed, tensor data memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
    map: Option<Mmap>,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let len = self.bytes.len() as u64;
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= len).ok_or_else(|| GgufError::Truncated {
            what: what(),
            start: self.pos as u64,
            end: (self.pos as u64).saturating_add(n),
            len,
        })?;
        let out = &self.bytes[self.pos..end as usize];
        self.pos = end as usize;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A string; `key` names it in errors (the key itself, or the key it belongs to).
    fn string(&mut self, what: &dyn Fn() -> String, key: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| GgufError::BadValue { key: key.into(), message: format!("string is not UTF-8 ({e})") })
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        let what = || format!("the value of `{key}`");
        let what: &dyn Fn() -> String = &what;
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(GgufError::BadValue { key: key.into(), message: format!("bool byte {b} is neither 0 nor 1") }),
            },
            8 => GgufValue::String(self.string(what, key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::BadValue { key: key.into(), message: format!("arrays nested deeper than {MAX_ARRAY_DEPTH}") });
                }
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                // Every element takes at least one byte: refuse counts the file cannot hold
                // before allocating for them.
                let left = (self.bytes.len() - self.pos) as u64;
                if count > left {
                    return Err(GgufError::Truncated {
                        what: format!("the {count} elements of `{key}`"),
                        start: self.pos as u64,
                        end: (self.pos as u64).saturating_add(count),
                        len: self.bytes.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(GgufError::BadValue { key: key.into(), message: format!("unknown value type {other}") }),
        })
    }
}

/// A metadata value for a message, cut short.
fn value_text(v: &GgufValue) -> String {
    let text = match v {
        GgufValue::String(s) => format!("{s:?}"),
        GgufValue::Array(a) => format!("an array of {} elements", a.len()),
        other => format!("{other:?}"),
    };
    clex_core::config::echo(&text)
}

/// The parsed header: everything but the data.
struct Header {
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
}

fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.take(4, &|| "the magic".into())?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic.to_vec() });
    }
    let version = c.u32(&|| "the version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"), &format!("#{i}"))?;
        let ty = c.u32(&|| format!("the type of `{key}`"))?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Duplicate { what: "metadata key", name: key });
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v.as_u64().filter(|a| a.is_power_of_two() && *a <= MAX_ALIGNMENT).ok_or_else(|| GgufError::BadValue {
            key: "general.alignment".into(),
            message: format!("{} is not accepted (accepted: a power of two from 1 to {MAX_ALIGNMENT})", value_text(v)),
        })?,
    };

    let mut tensors: Vec<TensorInfo> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"), &format!("tensor #{i}"))?;
        let what = |field: &str| format!("the {field} of tensor `{name}`");
        let n_dims = c.u32(&|| what("dimension count"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadShape { tensor: name, message: format!("{n_dims} dimensions (accepted: 1 to {MAX_DIMS})") });
        }
        let dims = (0..n_dims).map(|_| c.u64(&|| what("dimensions"))).collect::<Result<Vec<_>, _>>()?;
        let id = c.u32(&|| what("type"))?;
        let offset = c.u64(&|| what("offset"))?;
        let ggml_type = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownType { tensor: name.clone(), id })?;
        let bad_shape = |message: String| GgufError::BadShape { tensor: name.clone(), message };
        if dims.contains(&0) {
            // An empty tensor has no rows to read or un-permute; no model has one.
            return Err(bad_shape(format!("dims {dims:?} include 0 (accepted: every dim >= 1)")));
        }
        let n: u64 = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad_shape(format!("dims {dims:?} overflow")))?;
        if n.checked_mul(ggml_type.type_size() as u64).is_none() {
            return Err(bad_shape(format!("dims {dims:?} overflow")));
        }
        if !dims[0].is_multiple_of(ggml_type.block_size() as u64) {
            return Err(bad_shape(format!(
                "rows of {} values are not whole {} blocks of {}",
                dims[0],
                ggml_type.name(),
                ggml_type.block_size()
            )));
        }
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::Misaligned { tensor: name, offset, alignment });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::Duplicate { what: "tensor", name });
        }
        tensors.push(TensorInfo { name, dims, ggml_type, offset });
    }

    // The data section starts at the next multiple of the alignment (a file with no tensor
    // data may end before it).
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    if !tensors.is_empty() && data_start > bytes.len() as u64 {
        return Err(GgufError::Truncated {
            what: format!("the data section (general.alignment {alignment})"),
            start: data_start,
            end: data_start,
            len: bytes.len() as u64,
        });
    }
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        let end = t.offset.checked_add(t.n_bytes());
        if end.is_none_or(|e| e > data_len) {
            return Err(GgufError::OutOfBounds { tensor: t.name.clone(), start: t.offset, end: end.unwrap_or(u64::MAX), len: data_len });
        }
    }
    Ok(Header { version, alignment, metadata, tensors, data_start: data_start as usize })
}

impl GgufFile {
    /// Opens and validates `path`: header, metadata, tensor infos, alignment and bounds.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io { path: path.to_path_buf(), source };
        let file = crate::weights::open_regular(path)?;
        let len = file.metadata().map_err(io)?.len();
        // mmap refuses empty files; an empty file is simply a truncated one.
        // SAFETY: read-only mapping; a concurrent writer truncating the file is the user's
        // problem, as with every mmap-based checkpoint loader.
        let map = if len == 0 { None } else { Some(unsafe { Mmap::map(&file) }.map_err(io)?) };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let h = parse(bytes).map_err(|source| ModelError::Gguf { path: path.to_path_buf(), source })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: h.version,
            alignment: h.alignment,
            metadata: h.metadata,
            tensors: h.tensors,
            data_start: h.data_start,
            map,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// This file's error for `source`.
    pub fn error(&self, source: GgufError) -> ModelError {
        ModelError::Gguf { path: self.path.clone(), source }
    }

    /// The raw bytes of a tensor (bounds checked at open).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset as usize;
        // Bounds were checked at open; a TensorInfo of another file reads as empty.
        self.map.as_deref().unwrap_or(&[]).get(start..start + t.n_bytes() as usize).unwrap_or(&[])
    }

    /// A tensor's values as f32, row-major in [`TensorInfo::shape`].
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<Vec<f32>, ModelError> {
        dequantize(t.ggml_type, self.tensor_bytes(t))
            .ok_or_else(|| self.error(GgufError::UnsupportedType { tensor: t.name.clone(), type_name: t.ggml_type.name().into() }))
    }

    fn required(&self, key: &str) -> Result<&GgufValue, ModelError> {
        self.get(key).ok_or_else(|| self.error(GgufError::MissingKey { key: key.into() }))
    }

    fn wrong(&self, key: &str, v: &GgufValue, expected: &str) -> ModelError {
        self.error(GgufError::BadValue { key: key.into(), message: format!("expected {expected}, found {}", v.type_name()) })
    }

    /// A required non-negative integer.
    pub fn u64_of(&self, key: &str) -> Result<u64, ModelError> {
        let v = self.required(key)?;
        v.as_u64().ok_or_else(|| self.wrong(key, v, "a non-negative integer"))
    }

    /// An optional non-negative integer (present with another type is an error).
    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>, ModelError> {
        self.get(key).map(|_| self.u64_of(key)).transpose()
    }

    /// An optional finite number (NaN and infinities are errors, not absent values).
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                Some(x) => Err(self.error(GgufError::BadValue { key: key.into(), message: format!("{x} is not a finite number") })),
                None => Err(self.wrong(key, v, "a number")),
            },
        }
    }

    /// A required string.
    pub fn str_of(&self, key: &str) -> Result<&str, ModelError> {
        let v = self.required(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, v, "a string"))
    }

    /// An optional string.
    pub fn str_opt(&self, key: &str) -> Result<Option<&str>, ModelError> {
        self.get(key).map(|_| self.str_of(key)).transpose()
    }

    /// An optional bool.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong(key, v, "a bool")),
        }
    }

    /// A required array.
    pub fn array_of(&self, key: &str) -> Result<&[GgufValue], ModelError> {
        let v = self.required(key)?;
        v.as_array().ok_or_else(|| self.wrong(key, v, "an array"))
    }

    /// A required array of strings.
    pub fn strings_of(&self, key: &str) -> Result<Vec<&str>, ModelError> {
        self.array_of(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| self.wrong(&format!("{key}[{i}]"), v, "a string")))
            .collect()
    }
}
