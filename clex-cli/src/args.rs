//! Flags several subcommands share: `--dtype`, `--cache-policy`, the rope override group,
//! `--allow-nonfinite`, `--tokenizer`'s fallback to the model's own tokenizer, and the value
//! parsers that refuse NaN, infinities and out-of-range numbers at the flag.

use std::path::Path;

use anyhow::{Context, bail};
use burn::tensor::DType;
use clex_models::{CachePolicy, ModelConfig, ModelSource, RopeChange, RopeKind, SamplingParams};
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

/// How a subcommand that decodes draws tokens (`generate`, `chat`).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingFlags {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8, value_parser = non_negative)]
    pub temperature: f64,
    /// Keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long, value_parser = probability)]
    pub top_p: Option<f64>,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.1, value_parser = positive_f32)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
}

impl SamplingFlags {
    /// The sampler's settings.
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// Where and how a decoding subcommand runs the model (`generate`, `chat`, `serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunFlags {
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// GPU index for GPU backends.
    #[arg(long)]
    pub device: Option<usize>,
    /// KV cache policy.
    #[arg(long, value_enum, default_value_t = CachePolicyFlag::Reference)]
    pub cache_policy: CachePolicyFlag,
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
    #[arg(long, default_value_t = 2.0, value_parser = positive)]
    pub rope_factor: f64,
    /// P, the length scaling starts from (max_position_embeddings; default: the model's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=clex_core::config::limits::MAX_POSITIONS as u64))]
    pub rope_p: Option<u64>,
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
        let p = self.rope_p.map(|p| p as usize);
        source.config().with_rope(&rope, p).with_context(|| {
            format!("--rope-scaling {} --rope-factor {} on {}", flag_name(kind), self.rope_factor, source.path().display())
        })
    }
}

/// A value-enum flag's value as typed on the command line.
fn flag_name(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

/// The tokenizer `--tokenizer` names, else `source`'s own, checked against the model's
/// vocabulary (every id it can produce, [`ModelSource::tokenizer_or`]); with
/// where it came from, for messages.
pub fn tokenizer(flag: Option<&Path>, source: &ModelSource) -> anyhow::Result<(Tokenizer, String)> {
    Ok(source.tokenizer_or(flag)?)
}

/// `--allow-nonfinite`, shared by the subcommands that load a model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LoadFlags {
    /// Load weights holding NaN or infinities (refused by default, naming the tensor), e.g. to
    /// inspect a broken file.
    #[arg(long)]
    pub allow_nonfinite: bool,
}

impl LoadFlags {
    /// Opens the model at `path` ([`ModelSource::open`]) with these flags.
    pub fn open(&self, path: &Path) -> anyhow::Result<ModelSource> {
        let mut source = ModelSource::open(path)?;
        source.set_allow_nonfinite(self.allow_nonfinite);
        Ok(source)
    }
}

/// The text of a file a flag names, which must be a regular file (a FIFO would block).
pub fn read_flag_file(flag: &str, path: &Path) -> anyhow::Result<String> {
    clex_models::weights::read_regular(path).with_context(|| format!("{flag} {}", path.display()))
}

/// A finite number >= 0 (`--temperature`).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x >= 0.0 { Ok(x) } else { Err(format!("{x} is not accepted; accepted values: a finite number >= 0")) }
}

/// A finite number > 0 (`--rope-factor`, `--repeat-penalty`).
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x > 0.0 { Ok(x) } else { Err(format!("{x} is not accepted; accepted values: a finite number > 0")) }
}

/// A finite f32 > 0 (`--repeat-penalty`).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let x: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x > 0.0 { Ok(x) } else { Err(format!("{x} is not accepted; accepted values: a finite number > 0")) }
}

/// A number in (0, 1] (`--top-p`).
pub fn probability(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if x > 0.0 && x <= 1.0 { Ok(x) } else { Err(format!("{x} is not accepted; accepted values: a number > 0 and <= 1")) }
}

/// A number in [0, 1] (`--depths`).
pub fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&x) { Ok(x) } else { Err(format!("{x} is not accepted; accepted values: a number in [0, 1]")) }
}
