//! clex-core: the RoPE family (default, linear, dynamic NTK, YaRN, Llama 3.1, LongRoPE) and
//! CLEX's neural-ODE frequency trajectory, generic over burn backends.
//!
//! - [`config`]: rope settings parsed from HF `config.json` in every real-world spelling.
//! - [`rope`]: inverse frequencies and attention scaling per kind, cos/sin tables, rotary
//!   application (rotate-half, partial rotary).
//! - [`clex`]: the CLEX ODE, its torchdiffeq-compatible solver with exact reverse mode, the
//!   layer's θ table, t selection, log scaling and the training position sampler.
//! - [`attention`]: attention over sequence-major tensors with grouped KV heads and the
//!   KV-cache write, per backend (our kernel on burn-flex, burn's fused op elsewhere).
//! - [`frequencies()`] / [`training_frequencies`]: the one answer to "which frequencies for
//!   N tokens" for every kind, CLEX included.
//!
//! The algorithm is described in `docs/CLEX.md`; comments cite its sections as
//! "docs/CLEX.md §N".

#![warn(missing_docs)]

pub mod attention;
mod backends;
pub mod clex;
pub mod config;
pub mod error;
mod frequencies;
pub mod rope;

pub use clex::{ClexBackend, ClexLayer, ClexLayerConfig};
pub use config::{ClexAct, ClexParams, RopeConfig, RopeScaling};
pub use error::{ClexError, ConfigError};
pub use frequencies::{Frequencies, FrequencyKey, frequencies, training_frequencies};
