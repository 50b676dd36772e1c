//! Flags several subcommands share: `--dtype`, `--cache-policy`, the rope override group and
//! `--tokenizer`'s fallback to the model's own tokenizer.

use std::path::Path;

use anyhow::{Context, bail};
use burn::tensor::DType;
use clex_models::{CachePolicy, ModelConfig, ModelSource, RopeChange, RopeKind};
use tokenizers::Tokenizer;

/// `--dtype`: the compute dtype of the weights (CLEX parameters stay f32).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl From<Dtype> for DType {
    fn from(d: Dtype) -> DType {
        match d {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
        }
    }
}

/// `--cache-policy`: how cached keys follow a change of the rotary frequencies.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicyFlag {
    /// Re-rotate cached raw keys (CLEX) / keep old rotations (others), as the reference code.
    Reference,
    /// Re-run the prefill over all tokens whenever the frequencies change.
    Recompute,
}

impl From<CachePolicyFlag> for CachePolicy {
    fn from(p: CachePolicyFlag) -> CachePolicy {
        match p {
            CachePolicyFlag::Reference => CachePolicy::Reference,
            CachePolicyFlag::Recompute => CachePolicy::Recompute,
        }
    }
}

/// `--rope-scaling KIND [--rope-factor F] [--rope-p P]`: run a model under another rope
/// than its checkpoint's, e.g. to compare length extrapolation methods on one model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RopeOverride {
    /// Non-CLEX models: override the rope scaling (clex attaches a fresh, untrained CLEX
    /// layer: θ(t) is NTK scaling with α = 2t − 1).
    #[arg(long, value_enum)]
    pub rope_scaling: Option<RopeKind>,
    /// Factor for --rope-scaling (for clex: T_max, the largest scaling factor t).
    #[arg(long, default_value_t = 2.0)]
    pub rope_factor: f64,
    /// P, the length scaling starts from (max_position_embeddings; default: the model's).
    #[arg(long)]
    pub rope_p: Option<usize>,
}

impl RopeOverride {
    /// The config to run `source` under: its own, or with the rope these flags name.
    pub fn config(&self, source: &ModelSource) -> anyhow::Result<ModelConfig> {
        let Some(kind) = self.rope_scaling else {
            if self.rope_p.is_some() {
                bail!("--rope-p needs --rope-scaling");
            }
            return Ok(source.config().clone());
        };
        let rope = RopeChange::new(kind, self.rope_factor).context("--rope-factor")?;
        source.config().with_rope(&rope, self.rope_p).with_context(|| format!("--rope-scaling on {}", source.path().display()))
    }
}

/// The tokenizer `--tokenizer` names, else `source`'s own; with where it came from, for
/// messages.
pub fn tokenizer(flag: Option<&Path>, source: &ModelSource) -> anyhow::Result<(Tokenizer, String)> {
    Ok(match flag {
        Some(p) => (clex_models::load_tokenizer(p)?, p.display().to_string()),
        None => (source.tokenizer()?, source.tokenizer_origin()),
    })
}
