//! Refusing work that cannot fit before allocating it: the estimate from
//! [`clex_models::CausalLm::memory_estimate`] against the memory the OS says is available.

use anyhow::bail;
use clex_models::CausalLm;
use clex_models::backend::Inference;

/// `MemAvailable` from /proc/meminfo, in bytes (None where there is no such file).
fn available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Errors out, with the estimate, when a forward of `seq` tokens over `total` positions
/// would not fit in available memory (CPU backends; GPU memory is the backend's business).
pub fn check(model: &CausalLm<Inference>, what: &str, seq: usize, total: usize) -> anyhow::Result<()> {
    if !clex_models::backend::HOST_MEMORY {
        return Ok(());
    }
    let need = model.memory_estimate(1, seq, total);
    if let Some(avail) = available()
        && need > avail
    {
        bail!(
            "{what}: a forward of {seq} tokens over {total} positions needs about {:.1} GiB beyond the weights; {:.1} GiB is available",
            need as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}
