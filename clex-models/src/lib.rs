//! clex-models: LLaMA, GPT-NeoX, Phi-2 and Mixtral (sparse mixture of experts) on any burn
//! backend, with every RoPE kind of clex-core and CLEX, HF checkpoints in and out, and the KV
//! cache CLEX needs.
//!
//! - [`ModelSource`] / [`save_model`]: HF directories (config.json + safetensors, sharded or
//!   not, f32/f16/bf16), errors naming the file and tensor; [`ModelSource`] also opens
//!   llama.cpp GGUF files ([`gguf`]: F32/F16/BF16 and Q4_0..Q8_0, Q4_K, Q5_K, Q6_K).
//! - [`ModelConfig::with_rope`]: a model under another rope ([`RopeChange`], [`RopeKind`]).
//! - [`CausalLm`]: one model type for every architecture; [`CausalLm::forward_with`] runs
//!   with or without a [`KvCache`] under a [`CachePolicy`].
//! - [`ChatTemplate`]: a model's Jinja chat template rendered as transformers renders it.

#![warn(missing_docs)]

mod arch;
mod attention;
pub mod backend;
pub mod cache;
pub mod chat;
pub mod config;
pub mod error;
mod export;
pub mod gguf;
mod init;
pub mod layers;
mod model;
pub mod sampling;
pub mod session;
mod source;
pub mod text;
pub mod weights;

pub use attention::{Attention, RotaryBatch};
pub use cache::{CachePolicy, CacheStats, KvCache};
pub use chat::{ChatMessage, ChatTemplate};
pub use config::{Activation, Architecture, ModelConfig, MoeConfig, RopeChange, RopeKind};
pub use error::{GgufError, ModelError};
pub use export::{GgufConversion, convert_gguf, hf_tensors, save_model, write_atomic};
pub use init::{attach_fresh_clex, init_model};
pub use model::{CausalLm, ForwardOptions, ForwardOutput};
pub use sampling::{Sampler, SamplingParams};
pub use session::{GenerateOptions, Generation, Session, StopReason};
pub use source::{ModelSource, load_tokenizer};
pub use text::TextStream;
pub use weights::HostTensor;
