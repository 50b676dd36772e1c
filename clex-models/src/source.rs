//! A model on disk, opened once: an HF directory (`config.json` plus `model.safetensors` or a
//! sharded `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`), a
//! llama.cpp `.gguf` file (any path that is a file), or an explicit config and safetensors
//! files. [`ModelSource`] answers the config, tokenizer and BOS question and builds the
//! model; a GGUF's header and metadata are parsed once and its tensors read from the one
//! mapping, straight into f32 host tensors.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, backend::Backend};
use clex_core::RopeScaling;
use tokenizers::Tokenizer;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::gguf::{self, GgufFile};
use crate::model::CausalLm;
use crate::weights::Weights;

/// What a [`ModelSource`] was opened from.
enum Origin {
    /// An HF directory: config.json, the weights and the tokenizer files inside it.
    HfDir,
    /// A config file and safetensors files; the tokenizer files are looked for next to the
    /// config.
    Files(Vec<PathBuf>),
    /// A GGUF file, parsed and memory-mapped.
    Gguf(GgufFile),
}

/// A model path, opened once: its config parsed, a GGUF's file mapped.
pub struct ModelSource {
    path: PathBuf,
    config: ModelConfig,
    origin: Origin,
}

/// A `tokenizer.json`, errors naming the file.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })
}

impl ModelSource {
    /// Opens `path`: a file is read as a GGUF, a directory as an HF model.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if path.is_file() {
            let g = GgufFile::open(path)?;
            let config = gguf::config(&g)?;
            return Ok(ModelSource { path: path.to_path_buf(), config, origin: Origin::Gguf(g) });
        }
        if !path.is_dir() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory or .gguf file not found"),
            });
        }
        let config = ModelConfig::from_file(&path.join("config.json"))?;
        Ok(ModelSource { path: path.to_path_buf(), config, origin: Origin::HfDir })
    }

    /// An explicit `config.json` and safetensors files (e.g. one weights file shared by
    /// several configs). The files are opened when the model is loaded.
    pub fn from_files(config: &Path, weights: &[PathBuf]) -> Result<Self, ModelError> {
        let parsed = ModelConfig::from_file(config)?;
        Ok(ModelSource { path: config.to_path_buf(), config: parsed, origin: Origin::Files(weights.to_vec()) })
    }

    /// The path it was opened from (the config file for [`ModelSource::from_files`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's own config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The GGUF file, when the source is one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.origin {
            Origin::Gguf(g) => Some(g),
            _ => None,
        }
    }

    /// The directory holding the tokenizer files of an HF source.
    fn tokenizer_dir(&self) -> &Path {
        match &self.origin {
            Origin::Files(_) => self.path.parent().unwrap_or(Path::new(".")),
            _ => &self.path,
        }
    }

    /// Where [`ModelSource::tokenizer`] reads from, for messages.
    pub fn tokenizer_origin(&self) -> String {
        match &self.origin {
            Origin::Gguf(_) => format!("{} (embedded)", self.path.display()),
            _ => self.tokenizer_dir().join("tokenizer.json").display().to_string(),
        }
    }

    /// The model's tokenizer: `tokenizer.json` of an HF directory, or the one a GGUF embeds.
    pub fn tokenizer(&self) -> Result<Tokenizer, ModelError> {
        match &self.origin {
            Origin::Gguf(g) => gguf::tokenizer(g),
            _ => load_tokenizer(&self.tokenizer_dir().join("tokenizer.json")),
        }
    }

    /// Whether sequences start with BOS unless the caller says otherwise: as
    /// `tokenizer.ggml.add_bos_token` says for a GGUF (llama.cpp's switch, false when absent;
    /// SmolLM2's is false), as `add_bos_token` in an HF directory's `tokenizer_config.json`,
    /// else true (the LLaMA convention).
    pub fn add_bos(&self) -> Result<bool, ModelError> {
        if let Origin::Gguf(g) = &self.origin {
            return Ok(g.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false));
        }
        let path = self.tokenizer_dir().join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(true) };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json { path: path.clone(), message: e.to_string() })?;
        Ok(v.get("add_bos_token").and_then(serde_json::Value::as_bool).unwrap_or(true))
    }

    /// The weights under HF names: the safetensors files (memory-mapped), or a GGUF's
    /// tensors dequantised to f32 host tensors.
    pub fn weights(&self) -> Result<Weights, ModelError> {
        match &self.origin {
            Origin::HfDir => Weights::open_dir(&self.path),
            Origin::Files(files) => Weights::open(files),
            Origin::Gguf(g) => gguf::checkpoint(g),
        }
    }

    /// The model with its own config on `device`, weights converted to `dtype` (CLEX
    /// parameters stay f32).
    pub fn load<B: Backend>(&self, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
        self.load_with(self.config.clone(), device, dtype)
    }

    /// The model under `config`, usually this source's config with another rope
    /// ([`ModelConfig::with_rope`]). A CLEX config on a checkpoint without a CLEX layer gets
    /// a fresh one (D = 0: at step 0 θ(t) is NTK scaling with α = 2t − 1).
    pub fn load_with<B: Backend>(&self, config: ModelConfig, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
        let ck = self.weights()?;
        if config.is_clex() && !self.config.is_clex() {
            // Build the weights under the plain rope, then attach the layer the config names.
            let mut plain = config.clone();
            plain.rope.scaling = RopeScaling::Default;
            let model = build(plain, &ck, device, dtype)?;
            return Ok(crate::init::with_fresh_clex(model, config));
        }
        build(config, &ck, device, dtype)
    }
}

/// The model `config` describes, from the tensors of `ck`; every tensor of `ck` must be used.
pub(crate) fn build<B: Backend>(config: ModelConfig, ck: &Weights, device: &B::Device, dtype: DType) -> Result<CausalLm<B>, ModelError> {
    let arch = config.arch;
    let model = crate::arch::load(config, ck, device, dtype)?;
    let unused = ck.unused();
    if !unused.is_empty() {
        let mut names = unused.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if unused.len() > 8 {
            names.push_str(&format!(" (and {} more)", unused.len() - 8));
        }
        return Err(ModelError::UnexpectedTensors { arch: arch.model_type().into(), names });
    }
    Ok(model)
}
