//! What several subcommands share: flag parsing, loading checks, token tensors, logits rows.

use std::path::Path;

use anyhow::bail;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use clex_models::CachePolicy;
use clex_train::backend::Inference;
use tokenizers::Tokenizer;

/// `--dtype f32|f16|bf16`.
pub fn parse_dtype(s: &str) -> anyhow::Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("--dtype {other}: accepted values: f32, f16, bf16"),
    })
}

/// `--cache-policy reference|recompute`.
pub fn parse_cache_policy(s: &str) -> anyhow::Result<CachePolicy> {
    Ok(match s {
        "reference" => CachePolicy::Reference,
        "recompute" => CachePolicy::Recompute,
        other => bail!("--cache-policy {other}: accepted values: reference, recompute"),
    })
}

/// Fails with the path when `dir` is not a directory.
pub fn require_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{}: model directory not found", dir.display());
    }
    Ok(())
}

/// A `tokenizer.json`, errors naming the file.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Token ids as a `[1, n]` tensor.
pub fn ids_tensor(ids: &[u32], device: &Device<Inference>) -> Tensor<Inference, 2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}

/// The last row of `[1, seq, vocab]` logits, on the host.
pub fn last_row(logits: Tensor<Inference, 3>) -> anyhow::Result<Vec<f32>> {
    let [_, s, vocab] = logits.dims();
    logits.narrow(1, s - 1, 1).reshape([vocab]).into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// −log softmax(row)[target], computed in f64 with the max subtracted.
pub fn nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x)) as f64;
    let lse = max + row.iter().map(|x| (*x as f64 - max).exp()).sum::<f64>().ln();
    lse - row[target] as f64
}
