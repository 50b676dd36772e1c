//! clex-train: CLEX training with burn-train (data, batching, the train step with t
//! sampling, checkpoints). So far it holds [`backend`], the one place that decides which
//! burn backend a program runs on.

#![warn(missing_docs)]

pub mod backend;
