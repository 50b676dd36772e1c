//! Refusing work that cannot fit before allocating it: the weights' size from the config
//! ([`clex_models::ModelConfig::weight_bytes`]) before loading, and the estimate from
//! [`clex_models::CausalLm::memory_estimate`] before a forward, against the memory the OS
//! says is available.

use anyhow::bail;
use burn::tensor::DType;
use clex_models::backend::Inference;
use clex_models::{CausalLm, ModelConfig, ModelSource};

const GIB: f64 = (1u64 << 30) as f64;

/// `MemAvailable` from /proc/meminfo, in bytes (None where there is no such file).
pub fn available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Errors out when `bytes` more (e.g. logits kept for a file) would not fit in available
/// memory.
pub fn check_bytes(what: &str, bytes: usize) -> anyhow::Result<()> {
    if clex_models::backend::HOST_MEMORY
        && let Some(avail) = available()
        && bytes > avail
    {
        bail!("{what}: needs about {:.1} GiB; {:.1} GiB is available", bytes as f64 / GIB, avail as f64 / GIB);
    }
    Ok(())
}

/// Errors out, with the sizes, when the weights `config` describes would not fit in available
/// memory at `dtype` (plus an f32 host copy for a GGUF, which is dequantised on the host
/// first). Run before anything is read, so a config asking for 10^12 layers costs nothing.
pub fn check_load(source: &ModelSource, config: &ModelConfig, dtype: DType) -> anyhow::Result<()> {
    let per_value = match dtype {
        DType::F16 | DType::BF16 => 2,
        _ => 4,
    };
    let host_copy = if source.gguf().is_some() { 4 } else { 0 };
    let params = config.parameter_count();
    let need = params.and_then(|p| p.checked_mul(per_value + host_copy));
    let path = source.path().display();
    let Some(need) = need else {
        bail!("{path}: the config describes more than 2^64 bytes of weights");
    };
    if clex_models::backend::HOST_MEMORY
        && let Some(avail) = available()
        && need > avail as u64
    {
        bail!(
            "{path}: the config describes {} parameters, about {:.1} GiB of weights; {:.1} GiB is available",
            params.unwrap_or(0),
            need as f64 / GIB,
            avail as f64 / GIB
        );
    }
    Ok(())
}

/// An upper bound, in f64 so it cannot overflow, of what a forward of `seq` tokens over
/// `total` positions can need: every term [`CausalLm::memory_estimate`] counts, at its
/// largest. When it is below `usize::MAX` the estimate's own integer arithmetic cannot
/// overflow.
fn bound(config: &ModelConfig, seq: usize, total: usize) -> f64 {
    let c = config;
    let (seq, total) = (seq as f64, total as f64);
    let kv = 3.0 * c.num_layers as f64 * c.num_kv_heads as f64 * c.head_dim as f64 * total;
    let scores = 2.0 * c.num_heads as f64 * seq * total;
    let activations = 8.0 * seq * c.hidden_size.max(c.intermediate_size) as f64;
    let logits = seq * c.vocab_size as f64;
    4.0 * (kv + scores + activations + logits)
}

/// Errors out, with the estimate, when a forward of `seq` tokens over `total` positions
/// would not fit in available memory (CPU backends; GPU memory is the backend's business).
/// Long inputs are assumed to go through the cache in chunks, as [`clex_models::Session`]
/// runs them.
pub fn check(model: &CausalLm<Inference>, what: &str, seq: usize, total: usize) -> anyhow::Result<()> {
    check_batch(model, what, 1, seq, total)
}

/// [`check`] for a batch of `batch` rows of `seq` new tokens each.
pub fn check_batch(model: &CausalLm<Inference>, what: &str, batch: usize, seq: usize, total: usize) -> anyhow::Result<()> {
    let upper = bound(model.config(), seq, total) * batch as f64;
    if upper >= (1u64 << 62) as f64 {
        bail!("{what}: a forward of {seq} tokens over {total} positions needs about {:.3e} GiB; more than any machine has", upper / GIB);
    }
    if !clex_models::backend::HOST_MEMORY {
        return Ok(());
    }
    let need = model.memory_estimate(batch, seq, total);
    if let Some(avail) = available()
        && need > avail
    {
        bail!(
            "{what}: a forward of {seq} tokens over {total} positions needs about {:.1} GiB beyond the weights; {:.1} GiB is available",
            need as f64 / GIB,
            avail as f64 / GIB
        );
    }
    Ok(())
}
