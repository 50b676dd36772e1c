//! clex-models: LLaMA and GPT-NeoX on any burn backend, with every RoPE kind of clex-core
//! and CLEX, HF checkpoints in and out, and the KV cache CLEX needs.
//!
//! - [`load_model`] / [`save_model`]: HF directories (config.json + safetensors, sharded or
//!   not, f32/f16/bf16), errors naming the file and tensor; [`load_model`] also reads
//!   llama.cpp GGUF files ([`gguf`]: F32/F16/BF16 and Q4_0..Q8_0, Q4_K, Q5_K, Q6_K).
//! - [`CausalLm`]: one model type for both architectures; [`CausalLm::forward_with`] runs
//!   with or without a [`KvCache`] under a [`CachePolicy`].

#![warn(missing_docs)]

mod attention;
pub mod backend;
pub mod cache;
pub mod config;
pub mod error;
mod export;
pub mod gguf;
mod gpt_neox;
mod hf;
mod init;
pub mod layers;
mod llama;
mod loader;
mod model;
pub mod sampling;
pub mod session;
pub mod weights;

pub use attention::{Attention, RotaryBatch};
pub use cache::{CachePolicy, CacheStats, KvCache};
pub use config::{Activation, Architecture, ModelConfig};
pub use error::{GgufError, ModelError};
pub use export::{hf_tensors, save_model, write_atomic};
pub use hf::HostTensor;
pub use init::{attach_fresh_clex, init_model};
pub use loader::{load_from_files, load_model, load_with_config, read_config};
pub use model::{CausalLm, ForwardOptions, ForwardOutput};
pub use sampling::{Sampler, SamplingParams};
pub use session::{GenerateOptions, Generation, Session, StopReason};
