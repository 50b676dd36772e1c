//! A model's weights under HF names: safetensors files (one, or a sharded index,
//! memory-mapped; f32 / f16 / bf16 on disk) or f32 host tensors (a GGUF's dequantised
//! tensors), converted to the compute dtype, every tensor checked against the shape the
//! config implies, and every tensor accounted for.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::ModelError;

/// A host tensor in HF name and layout: what a GGUF is read into and what saving writes.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// HF name.
    pub name: String,
    /// HF shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
    /// Kept in f32 whatever the model dtype (CLEX parameters).
    pub force_f32: bool,
}

/// An HF `nn.Linear` weight `[out, in]` as burn's `[in, out]`, materialised rather than a
/// transposed view: a strided weight would be copied to contiguous memory by every matmul
/// (most of a CPU decode step).
pub(crate) fn in_out_weight<B: Backend>(w_out_in: Tensor<B, 2>, device: &B::Device, dtype: DType) -> Tensor<B, 2> {
    Tensor::from_data(w_out_in.transpose().into_data(), (device, dtype))
}

/// Buffers some HF checkpoints carry that no model reads (recomputed rotary tables, causal
/// mask buffers of old GPT-NeoX exports). Present or not, they are ignored.
fn is_ignorable(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq") || name.ends_with("attention.bias") || name.ends_with("attention.masked_bias")
}

/// Little-endian tensor bytes as f32 values (floats exactly, integers by value); None for
/// dtypes we do not read.
fn decode(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32).collect(),
        _ => return None,
    })
}

/// One tensor of a safetensors file, as its header describes it.
struct Entry {
    /// Index into the files.
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the file.
    bytes: Range<usize>,
}

/// Where a checkpoint's tensors are.
enum Store {
    /// safetensors files, memory-mapped, and every tensor's place (headers parsed once).
    Files { files: Vec<(PathBuf, Mmap)>, index: HashMap<String, Entry> },
    /// f32 host tensors in HF names and layouts (a GGUF's dequantised tensors), labelled in
    /// errors by where they came from. A tensor's values move out when the model reads them,
    /// so the host copy shrinks as the device copy grows.
    Host { label: PathBuf, shapes: HashMap<String, Vec<usize>>, values: RefCell<HashMap<String, Vec<f32>>> },
}

/// The weights of a checkpoint, opened: memory-mapped safetensors files, or f32 host tensors.
pub struct Weights {
    store: Store,
    used: RefCell<BTreeSet<String>>,
    /// Load tensors holding NaN or infinities instead of refusing them.
    allow_nonfinite: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Opens `path` for reading if it is a regular file (after symlinks): a FIFO would block
/// the open until someone writes to it, a device could be endless.
pub fn open_regular(path: &Path) -> Result<std::fs::File, ModelError> {
    let not_regular = || ModelError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device); accepted: a regular file",
        ),
    };
    if !std::fs::metadata(path).map_err(io(path))?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    // The path may have been replaced between the two looks.
    if !file.metadata().map_err(io(path))?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// The text of the regular file `path` ([`open_regular`]), errors naming it.
pub fn read_regular(path: &Path) -> Result<String, ModelError> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open_regular(path)?, &mut text).map_err(io(path))?;
    Ok(text)
}

/// The first non-finite value of `values` (index, value) and how many there are.
fn first_nonfinite(values: &[f32]) -> Option<(usize, f32, usize)> {
    let first = values.iter().position(|v| !v.is_finite())?;
    Some((first, values[first], values[first..].iter().filter(|v| !v.is_finite()).count()))
}

impl Weights {
    /// `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Self::open(&[single]);
        }
        if !index.exists() {
            return Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the model directory",
                ),
            });
        }
        let text = read_regular(&index)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json { path: index.clone(), message: e.to_string() })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Json { path: index.clone(), message: "missing object `weight_map`".into() })?;
        let mut shards: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        shards.sort();
        shards.dedup();
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        Self::open(&paths)
    }

    /// The given safetensors files (tensor names must be unique across them).
    pub fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = open_regular(path)?;
            // SAFETY: the file is opened read-only; a concurrent writer truncating it is
            // the user's problem, as with every mmap-based checkpoint loader.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io(path))?;
            // Validates the header and every tensor's byte range against the file length.
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                // The parser quotes the header's values: keep the message one short line.
                message: clex_core::config::echo_long(&e.to_string()),
            })?;
            // An 8-byte header length, the JSON header, then the data the offsets count in.
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let entry = Entry { file: i, dtype: info.dtype, shape: info.shape.clone(), bytes: data_start + start..data_start + end };
                if index.insert(name.clone(), entry).is_some() {
                    return Err(ModelError::Safetensors {
                        path: path.clone(),
                        message: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
            }
            files.push((path.clone(), mmap));
        }
        Ok(Weights { store: Store::Files { files, index }, used: RefCell::new(BTreeSet::new()), allow_nonfinite: false })
    }

    /// A checkpoint of host tensors (HF names and layouts, f32), kept as they are; `label`
    /// names it in errors (e.g. the GGUF they came from).
    pub fn from_host(label: &Path, tensors: Vec<HostTensor>) -> Result<Self, ModelError> {
        let mut shapes = HashMap::new();
        let mut values = HashMap::new();
        for t in tensors {
            let n: usize = t.shape.iter().product();
            if n != t.values.len() {
                return Err(ModelError::Safetensors {
                    path: label.to_path_buf(),
                    message: format!("tensor `{}`: shape {:?} needs {n} values, found {}", t.name, t.shape, t.values.len()),
                });
            }
            if shapes.insert(t.name.clone(), t.shape).is_some() {
                return Err(ModelError::Safetensors { path: label.to_path_buf(), message: format!("tensor `{}` appears twice", t.name) });
            }
            values.insert(t.name, t.values);
        }
        Ok(Weights {
            store: Store::Host { label: label.to_path_buf(), shapes, values: RefCell::new(values) },
            used: RefCell::new(BTreeSet::new()),
            allow_nonfinite: false,
        })
    }

    /// Whether tensors holding NaN or infinities load (`true`) or are refused with an error
    /// naming the tensor (`false`, the default): such a model computes nothing but NaN.
    pub fn set_allow_nonfinite(&mut self, allow: bool) {
        self.allow_nonfinite = allow;
    }

    /// True if the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        match &self.store {
            Store::Files { index, .. } => index.contains_key(name),
            Store::Host { shapes, .. } => shapes.contains_key(name),
        }
    }

    fn files_list(&self) -> String {
        match &self.store {
            Store::Files { files, .. } => files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", "),
            Store::Host { label, .. } => label.display().to_string(),
        }
    }

    fn missing(&self, name: &str, expected: &[usize]) -> ModelError {
        ModelError::MissingTensor { name: name.to_string(), expected: expected.to_vec(), files: self.files_list() }
    }

    /// Tensor `name` as f32 values, checked to have shape `expected`.
    pub fn f32_values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        let mismatch = |path: &Path, found: &[usize]| ModelError::ShapeMismatch {
            name: name.into(),
            path: path.to_path_buf(),
            found: found.to_vec(),
            expected: expected.to_vec(),
        };
        let source: &PathBuf;
        let values = match &self.store {
            Store::Files { files, index } => {
                let e = index.get(name).ok_or_else(|| self.missing(name, expected))?;
                let (path, bytes) = &files[e.file];
                source = path;
                if e.shape != expected {
                    return Err(mismatch(path, &e.shape));
                }
                match e.dtype {
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 => decode(e.dtype, &bytes[e.bytes.clone()]).expect("a float dtype"),
                    other => {
                        return Err(ModelError::Safetensors {
                            path: path.clone(),
                            message: format!("tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16"),
                        });
                    }
                }
            }
            Store::Host { label, shapes, values } => {
                let shape = shapes.get(name).ok_or_else(|| self.missing(name, expected))?;
                if shape != expected {
                    return Err(mismatch(label, shape));
                }
                source = label;
                // Each tensor is read once by the builder; a second read finds it moved out.
                values.borrow_mut().remove(name).ok_or_else(|| ModelError::Safetensors {
                    path: label.clone(),
                    message: format!("tensor `{name}` was already moved to the model"),
                })?
            }
        };
        if !self.allow_nonfinite
            && let Some((index, value, count)) = first_nonfinite(&values)
        {
            return Err(ModelError::NonFinite { name: name.into(), path: source.clone(), index, value, count });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(values)
    }

    /// Any tensor by name, converted to f32 (integer tensors too, e.g. token ids), with its
    /// shape. Does not count as used.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
        match &self.store {
            Store::Files { files, index } => {
                let e = index.get(name).ok_or_else(|| self.missing(name, &[]))?;
                let (path, bytes) = &files[e.file];
                let values = decode(e.dtype, &bytes[e.bytes.clone()]).ok_or_else(|| ModelError::Safetensors {
                    path: path.clone(),
                    message: format!("tensor `{name}` has dtype {:?}", e.dtype),
                })?;
                Ok((values, e.shape.clone()))
            }
            Store::Host { label, shapes, values } => {
                let shape = shapes.get(name).ok_or_else(|| self.missing(name, &[]))?;
                let values = values.borrow().get(name).cloned().ok_or_else(|| ModelError::Safetensors {
                    path: label.clone(),
                    message: format!("tensor `{name}` was already moved to the model"),
                })?;
                Ok((values, shape.clone()))
            }
        }
    }

    /// The stored dtype of a tensor (F32 for host tensors).
    pub fn dtype_of(&self, name: &str) -> Option<Dtype> {
        match &self.store {
            Store::Files { index, .. } => index.get(name).map(|e| e.dtype),
            Store::Host { shapes, .. } => shapes.contains_key(name).then_some(Dtype::F32),
        }
    }

    fn all_names(&self) -> Vec<&String> {
        match &self.store {
            Store::Files { index, .. } => index.keys().collect(),
            Store::Host { shapes, .. } => shapes.keys().collect(),
        }
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.all_names().into_iter().cloned().collect();
        v.sort();
        v
    }

    /// Tensor `name` on `device` in `dtype`, checked to have shape `expected`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, D>, ModelError> {
        let values = self.f32_values(name, &expected)?;
        Ok(Tensor::from_data(TensorData::new(values, expected), (device, dtype)))
    }

    /// An HF `nn.Linear` (`{prefix}.weight` `[out, in]`, optional `{prefix}.bias` `[out]`) as
    /// a burn `Linear` (`[in, out]`).
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Linear<B>, ModelError> {
        let w: Tensor<B, 2> = self.tensor(&format!("{prefix}.weight"), [d_out, d_in], device, dtype)?;
        let w = in_out_weight(w, device, dtype);
        let bias = if bias { Some(Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out], device, dtype)?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(w), bias })
    }

    /// Tensors on disk that nothing read (ignorable buffers excluded).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut v: Vec<String> = self.all_names().into_iter().filter(|n| !used.contains(*n) && !is_ignorable(n)).cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, shape: Vec<usize>) -> HostTensor {
        let n = shape.iter().product();
        HostTensor { name: name.into(), shape, values: (0..n).map(|i| i as f32).collect(), force_f32: false }
    }

    /// Host tensors pass the checks files do: a missing tensor and a wrong shape are named
    /// with the source, the values come back as given, and what nothing read is listed.
    #[test]
    fn host_tensors_are_checked_like_files() {
        let label = Path::new("m.gguf");
        let ck = Weights::from_host(label, vec![host("a.weight", vec![2, 3]), host("b.weight", vec![4]), host("c.bias", vec![1])]).unwrap();
        assert_eq!(ck.names(), ["a.weight", "b.weight", "c.bias"]);
        let e = ck.f32_values("x.weight", &[2]).unwrap_err().to_string();
        assert!(e.contains("missing tensor `x.weight`") && e.contains("m.gguf"), "{e}");
        let e = ck.f32_values("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("m.gguf") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        assert_eq!(ck.read_f32("b.weight").unwrap(), (vec![0.0, 1.0, 2.0, 3.0], vec![4]));
        assert_eq!(ck.f32_values("a.weight", &[2, 3]).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ck.unused(), ["b.weight", "c.bias"]);
        let e = ck.f32_values("a.weight", &[2, 3]).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("already moved"), "{e}");
        let e = Weights::from_host(label, vec![host("a", vec![2]), host("a", vec![2])]).err().unwrap().to_string();
        assert!(e.contains("`a` appears twice"), "{e}");
        let mut short = host("s", vec![3]);
        short.values.pop();
        let e = Weights::from_host(label, vec![short]).err().unwrap().to_string();
        assert!(e.contains("`s`") && e.contains("needs 3 values"), "{e}");
    }
}
