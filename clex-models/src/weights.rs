//! Reading HF safetensors checkpoints: one file or a sharded index, memory-mapped (or an
//! in-memory image, e.g. of a GGUF's dequantised tensors), f32 / f16 / bf16 on disk converted
//! to the compute dtype, every tensor checked against the shape the config implies, and every
//! tensor on disk accounted for.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::ModelError;
use crate::hf::HostTensor;

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

/// The bytes of one safetensors file: mapped from disk, or built in memory (a converted GGUF).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened checkpoint: safetensors files (memory-mapped, or in memory) and a name → file
/// index.
pub struct Checkpoint {
    files: Vec<(PathBuf, Bytes)>,
    index: HashMap<String, usize>,
    used: RefCell<BTreeSet<String>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

impl Checkpoint {
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
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
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
            let file = std::fs::File::open(path).map_err(io(path))?;
            // SAFETY: the file is opened read-only; a concurrent writer truncating it is
            // the user's problem, as with every mmap-based checkpoint loader.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io(path))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors { path: path.clone(), message: e.to_string() })?;
            for name in st.names() {
                if index.insert(name.to_string(), i).is_some() {
                    return Err(ModelError::Safetensors {
                        path: path.clone(),
                        message: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
            }
            drop(st);
            files.push((path.clone(), Bytes::Mapped(mmap)));
        }
        Ok(Checkpoint { files, index, used: RefCell::new(BTreeSet::new()) })
    }

    /// A checkpoint of host tensors (HF names and layouts, f32) held in memory as one
    /// safetensors image; `label` names it in errors (e.g. the GGUF they came from).
    pub fn from_tensors(label: &Path, tensors: Vec<HostTensor>) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Safetensors { path: label.to_path_buf(), message };
        // Each tensor's f32 values are dropped as soon as they are encoded.
        let encoded: Vec<(String, Vec<usize>, Vec<u8>)> =
            tensors.into_iter().map(|t| (t.name, t.shape, t.values.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
        let views = encoded
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| bad(format!("tensor `{name}`: {e}")))?))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let image = safetensors::serialize(views, None).map_err(|e| bad(e.to_string()))?;
        drop(encoded);
        let index =
            SafeTensors::deserialize(&image).map_err(|e| bad(e.to_string()))?.names().into_iter().map(|n| (n.to_string(), 0)).collect();
        Ok(Checkpoint { files: vec![(label.to_path_buf(), Bytes::Owned(image))], index, used: RefCell::new(BTreeSet::new()) })
    }

    /// True if the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn files_list(&self) -> String {
        self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Tensor `name` as f32 values, checked to have shape `expected`.
    pub fn f32_values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        let &i = self.index.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: expected.to_vec(),
            files: self.files_list(),
        })?;
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: path.clone(), message: e.to_string() })?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.into(),
                path: path.clone(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let values = match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => decode(view.dtype(), view.data()).expect("a float dtype"),
            other => {
                return Err(ModelError::Safetensors {
                    path: path.clone(),
                    message: format!("tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16"),
                });
            }
        };
        self.used.borrow_mut().insert(name.to_string());
        Ok(values)
    }

    /// Any tensor by name, converted to f32 (integer tensors too, e.g. token ids), with its
    /// shape. Does not count as used.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
        let &i = self.index.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            expected: vec![],
            files: self.files_list(),
        })?;
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let values = decode(view.dtype(), view.data()).ok_or_else(|| ModelError::Safetensors {
            path: path.clone(),
            message: format!("tensor `{name}` has dtype {:?}", view.dtype()),
        })?;
        Ok((values, view.shape().to_vec()))
    }

    /// The on-disk dtype of a tensor.
    pub fn dtype_of(&self, name: &str) -> Option<Dtype> {
        let &i = self.index.get(name)?;
        let st = SafeTensors::deserialize(&self.files[i].1).ok()?;
        st.tensor(name).ok().map(|v| v.dtype())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
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

    /// An HF `nn.Linear` (`{prefix}.weight` [out, in], optional `{prefix}.bias` [out]) as a
    /// burn `Linear` ([in, out]).
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
        let w = crate::hf::in_out_weight(w, device, dtype);
        let bias = if bias { Some(Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out], device, dtype)?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(w), bias })
    }

    /// Tensors on disk that nothing read (ignorable buffers excluded).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut v: Vec<String> = self.index.keys().filter(|n| !used.contains(*n) && !is_ignorable(n)).cloned().collect();
        v.sort();
        v
    }
}
