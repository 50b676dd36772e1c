//! Errors of model loading, saving and running. Each names the file, key or tensor at fault.

use std::path::PathBuf;

use clex_core::{ClexError, ConfigError};

/// Everything that can go wrong with a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` (or the index) is not valid JSON.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A config key is missing or wrong.
    #[error("{path}: {source}")]
    Config {
        /// The config file (or `<in memory>`).
        path: PathBuf,
        /// The problem.
        source: ConfigError,
    },
    /// `model_type` is not one we implement.
    #[error("{path}: unsupported model_type `{found}`; accepted values: llama, mistral, gpt_neox")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The model_type found.
        found: String,
    },
    /// A safetensors file is malformed (truncated, bad header, unsupported dtype).
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{name}` (expected shape {expected:?}) in {files}")]
    MissingTensor {
        /// HF tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The files searched.
        files: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` in {path} has shape {found:?}, but the config implies {expected:?}")]
    ShapeMismatch {
        /// HF tensor name.
        name: String,
        /// The file holding it.
        path: PathBuf,
        /// Shape on disk.
        found: Vec<usize>,
        /// Shape expected.
        expected: Vec<usize>,
    },
    /// A tensor holds NaN or infinities (the model would compute nothing but NaN).
    #[error(
        "tensor `{name}` in {path} holds {count} non-finite values (the first, {value}, at flat index {index}); \
         --allow-nonfinite loads it anyway"
    )]
    NonFinite {
        /// HF tensor name.
        name: String,
        /// The file holding it.
        path: PathBuf,
        /// Flat index of the first non-finite value.
        index: usize,
        /// That value.
        value: f32,
        /// How many values are not finite.
        count: usize,
    },
    /// The checkpoint holds tensors this architecture does not use.
    #[error("unexpected tensors in the checkpoint (not part of this {arch} model): {names}")]
    UnexpectedTensors {
        /// The architecture.
        arch: String,
        /// Comma-separated names (first few).
        names: String,
    },
    /// A GGUF file is malformed or holds something we do not read.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key or tensor.
        source: GgufError,
    },
    /// A `tokenizer.json` could not be read.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// A CLEX-level problem.
    #[error(transparent)]
    Clex(#[from] ClexError),
    /// A bad request at run time (e.g. token count, cache mismatch).
    #[error("{0}")]
    Invalid(String),
    /// A generation would start at or past its maximum sequence length.
    #[error("the prompt has {tokens} tokens; the maximum sequence length is {limit}")]
    TooLong {
        /// Tokens before the first generated one.
        tokens: usize,
        /// The maximum sequence length.
        limit: usize,
    },
    /// The backend cannot provide the requested devices.
    #[error("devices: {0}")]
    Devices(String),
}

/// What is wrong with a GGUF file; every variant names the key or tensor at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic \"{}\", expected \"GGUF\"", .found.escape_ascii())]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// A version other than 2 or 3 (v1 used 32-bit counts; a byte-swapped number is a
    /// big-endian file).
    #[error("GGUF version {0} is not supported (accepted: 2, 3; big-endian files are not read)")]
    UnsupportedVersion(u32),
    /// The file ends inside a header field.
    #[error("truncated: {what} needs bytes {start}..{end}, but the file has {len}")]
    Truncated {
        /// What was being read (names the key or tensor).
        what: String,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// File length.
        len: u64,
    },
    /// A metadata key is absent.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value is malformed or has the wrong type or value.
    #[error("metadata key `{key}`: {message}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor type id that ggml does not define.
    #[error("tensor `{tensor}`: unknown ggml type id {id}")]
    UnknownType {
        /// Tensor name.
        tensor: String,
        /// The type id found.
        id: u32,
    },
    /// A ggml type we do not dequantise.
    #[error("tensor `{tensor}` has type {type_name}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K")]
    UnsupportedType {
        /// Tensor name.
        tensor: String,
        /// The ggml type name.
        type_name: String,
    },
    /// Dimensions that cannot hold this type (rows not whole blocks, zero or too many dims).
    #[error("tensor `{tensor}`: {message}")]
    BadShape {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// Tensor data reaching past the end of the file.
    #[error("tensor `{tensor}`: data at bytes {start}..{end} of the data section, which has only {len} bytes")]
    OutOfBounds {
        /// Tensor name.
        tensor: String,
        /// First byte (relative to the data section).
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Bytes in the data section.
        len: u64,
    },
    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor `{tensor}`: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// Tensor name.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// `general.alignment` (32 when absent).
        alignment: u64,
    },
    /// The same key or tensor name twice.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Well-formed, but not something we can turn into a model (architecture, tensor).
    #[error("{0}")]
    Unsupported(String),
}
