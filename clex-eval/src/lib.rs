//! clex-eval: evaluating clex-models language models.
//!
//! - [`corpus`]: documents, the fixed document-level split, the bundled corpus.
//! - [`eval`]: the evaluation engine: perplexity and next-token accuracy at a length, under
//!   the CLEX paper's chunks, the official evaluation's KV-cache chunks, or a sliding window.
//! - [`passkey`]: passkey retrieval (a key hidden in filler text, decoded greedily).
//! - [`plot`]: SVG charts of training and evaluation curves (plotters).

#![warn(missing_docs)]

pub mod corpus;
pub mod error;
pub mod eval;
pub mod passkey;
pub mod plot;

pub use error::EvalError;
