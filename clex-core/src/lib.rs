//! clex-core: the RoPE family (default, linear, dynamic NTK, YaRN, Llama 3.1, LongRoPE) and
//! CLEX's neural-ODE frequency trajectory, generic over burn backends.
//!
//! - [`config`]: rope settings parsed from HF `config.json` in every real-world spelling.
//! - [`rope`]: inverse frequencies and attention scaling per kind, cos/sin tables, rotary
//!   application (rotate-half, partial rotary).
//! - [`clex`]: the CLEX ODE, its torchdiffeq-compatible solver with exact reverse mode, the
//!   θ table cache, t selection, log scaling and the training position sampler.
//!
//! The algorithm is described in `docs/CLEX.md`; comments cite its sections as
//! "docs/CLEX.md §N".

#![warn(missing_docs)]

mod backends;
pub mod clex;
pub mod config;
pub mod error;
pub mod rope;

pub use clex::{ClexBackend, ClexLayer, ClexLayerConfig};
pub use config::{ClexAct, ClexParams, RopeConfig, RopeScaling};
pub use error::{ClexError, ConfigError};
