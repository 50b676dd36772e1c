//! Errors of clex-core. Every message names the offending key or value so a user
//! can fix their `config.json` without reading our source.

/// A problem with a RoPE / CLEX configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConfigError {
    /// The JSON could not be parsed at all.
    #[error("invalid config JSON: {0}")]
    Json(String),
    /// A required key is absent.
    #[error("missing key `{key}` ({why}); accepted values: {accepted}")]
    MissingKey {
        /// Dotted path of the key, e.g. `rope_scaling.max_factor`.
        key: String,
        /// Which setting needs it.
        why: String,
        /// What may be written there.
        accepted: String,
    },
    /// The key is present but its value is not usable.
    #[error("invalid value for `{key}`: {value}; accepted values: {accepted}")]
    InvalidValue {
        /// Dotted path of the key.
        key: String,
        /// The value found, as JSON.
        value: String,
        /// What may be written there.
        accepted: String,
    },
    /// `rope_type` / `type` names a scaling we do not implement.
    #[error("unknown RoPE kind `{kind}` in `{key}`; accepted values: {accepted}")]
    UnknownKind {
        /// Dotted path of the key that carried the kind.
        key: String,
        /// The kind found.
        kind: String,
        /// The kinds we implement.
        accepted: String,
    },
}

/// A problem at run time with a CLEX request (not a configuration error).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ClexError {
    /// A tensor handed to the CLEX layer has the wrong shape.
    #[error("CLEX tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Tensor name (HF checkpoint name where there is one).
        name: String,
        /// Shape found.
        found: Vec<usize>,
        /// Shape expected.
        expected: Vec<usize>,
    },
    /// A sequence length or scaling factor outside what is defined.
    #[error("{0}")]
    OutOfRange(String),
}
