//! clex-train: CLEX training with burn-train (the corpus and evaluation are clex-eval's, the
//! backend choice clex-models').
//!
//! - [`tokenizer`]: HF tokenizers, or a byte-level BPE trained on the train split.
//! - [`packing`]: fixed-length training windows; [`batch`]: the dataset and batcher.
//! - [`metrics`]: burn-train metrics (loss/perplexity per length, tokens/s, t).
//! - [`step`]: the CLEX train step (t and positions drawn per step, θ(t) differentiable);
//!   [`precision`]: f16/bf16 compute over f32 master weights.
//! - [`trainer`]: a whole run ([`loader`] for exact resume, [`checkpoint`] atomic, [`lr_schedule`], [`preset`],
//!   [`param_groups`] for the ODE's own learning rate);
//!   [`run_lock`]: one process per run directory.

#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod error;
pub mod loader;
pub mod lr_schedule;
pub mod metrics;
pub mod monitor;
pub mod packing;
pub mod param_groups;
pub mod precision;
pub mod preset;
pub mod renderer;
pub mod run_lock;
pub mod step;
pub mod tokenizer;
pub mod trainer;

pub use error::TrainError;
