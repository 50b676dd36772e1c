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

use crate::chat::ChatTemplate;
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
    /// Load weights holding NaN or infinities ([`Weights::set_allow_nonfinite`]).
    allow_nonfinite: bool,
}

/// A `tokenizer.json` (a regular file), errors naming the file.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    let text = crate::weights::read_regular(path)?;
    let error = |e: String| ModelError::Tokenizer { path: path.to_path_buf(), message: clex_core::config::echo_long(&e) };
    // Syntax first: the tokenizers crate panics on some malformed JSON inside a decoder.
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| error(format!("invalid JSON: {e}")))?;
    text.parse::<Tokenizer>()
        .map_err(|e| ModelError::Tokenizer { path: path.to_path_buf(), message: clex_core::config::echo_long(&e.to_string()) })
}

/// Every id `tok` can produce or insert, each with its token text and where it comes from:
/// the vocabulary and added tokens, the post-processor's special tokens, the padding token.
fn tokenizer_ids(tok: &Tokenizer) -> Vec<(u64, String, &'static str)> {
    let mut ids: Vec<(u64, String, &'static str)> =
        tok.get_vocab(true).into_iter().map(|(text, id)| (id as u64, text, "vocabulary or added tokens")).collect();
    if let Some(pad) = tok.get_padding() {
        ids.push((pad.pad_id as u64, pad.pad_token.clone(), "padding"));
    }
    if let Some(post) = tok.get_post_processor()
        && let Ok(v) = serde_json::to_value(post)
    {
        post_processor_ids(&v, &mut ids);
    }
    ids
}

/// The token ids a serialised post-processor inserts: `special_tokens.*.ids` of a template,
/// `sep` / `cls` (`[text, id]`) of the BERT and RoBERTa processors, in any nesting
/// (sequences of processors).
fn post_processor_ids(v: &serde_json::Value, out: &mut Vec<(u64, String, &'static str)>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("ids", Value::Array(list)) => {
                        let text = map.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                        out.extend(list.iter().filter_map(Value::as_u64).map(|id| (id, text.clone(), "post-processor")));
                    }
                    ("sep" | "cls", Value::Array(pair)) => {
                        if let [Value::String(text), id] = pair.as_slice()
                            && let Some(id) = id.as_u64()
                        {
                            out.push((id, text.clone(), "post-processor"));
                        }
                    }
                    _ => post_processor_ids(value, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|x| post_processor_ids(x, out)),
        _ => {}
    }
}

/// Checks that every id `tok` (read from `label`) can produce or insert is inside a model
/// vocabulary of `vocab_size`: ids, not entry counts (a vocabulary may have holes), including
/// added tokens, the post-processor's and the padding token.
pub fn check_tokenizer(tok: &Tokenizer, label: &Path, vocab_size: usize) -> Result<(), ModelError> {
    let ids = tokenizer_ids(tok);
    let Some((id, text, origin)) = ids.into_iter().max_by_key(|(id, _, _)| *id) else { return Ok(()) };
    if id < vocab_size as u64 {
        return Ok(());
    }
    Err(ModelError::Tokenizer {
        path: label.to_path_buf(),
        message: format!(
            "token id {id} (`{}`, {origin}) is outside the model: the tokenizer has {} entries but the model's vocab_size is {vocab_size} (accepted ids: 0 to {})",
            clex_core::config::echo(&text),
            tok.get_vocab_size(true),
            vocab_size.saturating_sub(1)
        ),
    })
}

impl ModelSource {
    /// Opens `path`: a file is read as a GGUF, a directory as an HF model.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if path.is_file() {
            let g = GgufFile::open(path)?;
            let config = gguf::config(&g)?;
            return Ok(ModelSource { path: path.to_path_buf(), config, origin: Origin::Gguf(g), allow_nonfinite: false });
        }
        if path.exists() && !path.is_dir() {
            // A FIFO, socket or device: refused without opening it.
            crate::weights::open_regular(path)?;
        }
        if !path.is_dir() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory or .gguf file not found"),
            });
        }
        let config = ModelConfig::from_file(&path.join("config.json"))?;
        Ok(ModelSource { path: path.to_path_buf(), config, origin: Origin::HfDir, allow_nonfinite: false })
    }

    /// An explicit `config.json` and safetensors files (e.g. one weights file shared by
    /// several configs). The files are opened when the model is loaded.
    pub fn from_files(config: &Path, weights: &[PathBuf]) -> Result<Self, ModelError> {
        let parsed = ModelConfig::from_file(config)?;
        Ok(ModelSource { path: config.to_path_buf(), config: parsed, origin: Origin::Files(weights.to_vec()), allow_nonfinite: false })
    }

    /// Whether weights holding NaN or infinities load (default: refused, naming the tensor).
    pub fn set_allow_nonfinite(&mut self, allow: bool) {
        self.allow_nonfinite = allow;
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

    /// The model's tokenizer as stored: `tokenizer.json` of an HF directory, or the one a GGUF
    /// embeds (not checked against the model: [`ModelSource::tokenizer_or`] is).
    pub fn tokenizer(&self) -> Result<Tokenizer, ModelError> {
        match &self.origin {
            Origin::Gguf(g) => gguf::tokenizer(g),
            _ => load_tokenizer(&self.tokenizer_dir().join("tokenizer.json")),
        }
    }

    /// Checks a tokenizer read from `label` against this model's vocabulary ([`check_tokenizer`]),
    /// e.g. one model's tokenizer used with another.
    pub fn check_tokenizer(&self, tok: &Tokenizer, label: &str) -> Result<(), ModelError> {
        check_tokenizer(tok, Path::new(label), self.config.vocab_size)
    }

    /// The tokenizer adapter programs use: the tokenizer at `path` when given (a
    /// `--tokenizer` flag), else [`ModelSource::tokenizer`]; either way checked against this
    /// model's vocabulary ([`check_tokenizer`]), so no id it produces can leave the
    /// embedding. With where it came from.
    pub fn tokenizer_or(&self, path: Option<&Path>) -> Result<(Tokenizer, String), ModelError> {
        let (tok, label) = match path {
            None => (self.tokenizer()?, self.tokenizer_origin()),
            Some(p) => (load_tokenizer(p)?, p.display().to_string()),
        };
        check_tokenizer(&tok, Path::new(&label), self.config.vocab_size)?;
        Ok((tok, label))
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
        if !path.exists() {
            return Ok(true);
        }
        let text = crate::weights::read_regular(&path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json { path: path.clone(), message: e.to_string() })?;
        Ok(v.get("add_bos_token").and_then(serde_json::Value::as_bool).unwrap_or(true))
    }

    /// The model's chat template ([`crate::chat`]): a GGUF's `tokenizer.chat_template`, an HF
    /// directory's `chat_template.jinja` or `tokenizer_config.json` `chat_template`; `None`
    /// when it has none. A template that does not compile is an error naming the file and key.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>, ModelError> {
        match &self.origin {
            Origin::Gguf(g) => crate::chat::gguf_template(g),
            _ => crate::chat::hf_template(self.tokenizer_dir()),
        }
    }

    /// The Jinja file at `path` (`--chat-template`) as a chat template, rendering with this
    /// model's bos/eos texts.
    pub fn chat_template_file(&self, path: &Path) -> Result<ChatTemplate, ModelError> {
        let (bos, eos) = match &self.origin {
            Origin::Gguf(g) => crate::chat::gguf_special_tokens(g)?,
            _ => crate::chat::hf_special_tokens(self.tokenizer_dir())?,
        };
        ChatTemplate::from_file(path, bos, eos)
    }

    /// The weights under HF names: the safetensors files (memory-mapped), or a GGUF's
    /// tensors dequantised to f32 host tensors.
    pub fn weights(&self) -> Result<Weights, ModelError> {
        let mut weights = match &self.origin {
            Origin::HfDir => Weights::open_dir(&self.path)?,
            Origin::Files(files) => Weights::open(files)?,
            Origin::Gguf(g) => gguf::checkpoint(g)?,
        };
        weights.set_allow_nonfinite(self.allow_nonfinite);
        Ok(weights)
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
