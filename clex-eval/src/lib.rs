//! clex-eval: evaluating clex-models language models.
//!
//! - [`corpus`]: documents, the fixed document-level split, the bundled corpus.
//! - [`eval`]: perplexity and next-token accuracy under the CLEX paper's protocol.
//! - [`plot`]: SVG charts of training and evaluation curves.

#![warn(missing_docs)]

pub mod corpus;
pub mod error;
pub mod eval;
pub mod plot;

pub use error::EvalError;
