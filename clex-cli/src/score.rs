//! `clex score`: logits and per-token NLL of a fixed token sequence, for comparison with
//! other implementations; optionally fed as a prefill plus one token at a time through the
//! KV cache ([`Session`]).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_eval::eval::{Tally, token_nll};
use clex_models::backend::{self, Inference};
use clex_models::{CachePolicy, ModelSource, Session};
use safetensors::tensor::TensorView;

use crate::args::{self, CachePolicyFlag, LoadFlags};

/// Arguments of `clex score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// GPU index for GPU backends.
    #[arg(long)]
    device: Option<usize>,
    /// HF model directory or .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["ids_file", "text"])]
    ids: Option<Vec<u32>>,
    /// A JSON array of token ids.
    #[arg(long, conflicts_with = "text")]
    ids_file: Option<PathBuf>,
    /// Text, tokenised with --tokenizer (default MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    text: Option<String>,
    /// tokenizer.json for --text.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Write the logits here as a safetensors file with one tensor `logits` (f32 [1, n, vocab]).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write per-token NLL here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Feed the first N tokens as one forward and the rest one at a time through the cache.
    #[arg(long)]
    prefill: Option<usize>,
    /// KV cache policy with --prefill.
    #[arg(long, value_enum, default_value_t = CachePolicyFlag::Reference)]
    cache_policy: CachePolicyFlag,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = args::Dtype::F32)]
    dtype: args::Dtype,
    #[command(flatten)]
    load: LoadFlags,
}

fn token_ids(args: &ScoreArgs, source: &ModelSource) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &args.ids {
        return Ok(ids.clone());
    }
    if let Some(p) = &args.ids_file {
        let text = args::read_flag_file("--ids-file", p)?;
        return serde_json::from_str::<Vec<u32>>(&text).map_err(|e| {
            anyhow::anyhow!(
                "--ids-file {}: expected a JSON array of token ids (0 to 2^32 - 1): {}",
                p.display(),
                clex_core::config::echo_long(&e.to_string())
            )
        });
    }
    if let Some(t) = &args.text {
        let (tok, _) = crate::args::tokenizer(args.tokenizer.as_deref(), source)?;
        return Ok(tok.encode(t.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec());
    }
    bail!("give the tokens with --ids, --ids-file or --text")
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let source = args.load.open(&args.model)?;
    let (dtype, policy) = (burn::tensor::DType::from(args.dtype), CachePolicy::from(args.cache_policy));
    let ids = token_ids(&args, &source)?;
    if ids.is_empty() {
        bail!("no tokens to score");
    }
    let vocab = source.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    crate::memory::check_load(&source, source.config(), dtype)?;
    let device = backend::device(args.device);
    let model = source.load::<Inference>(&device, dtype)?;
    let vocab = model.config().vocab_size;
    crate::memory::check(&model, "scoring", args.prefill.unwrap_or(ids.len()), ids.len())?;
    if args.out.is_some() {
        // The logits kept for the file, and its serialised bytes.
        let bytes = ids.len().checked_mul(vocab).and_then(|n| n.checked_mul(8)).context("--out: the logits are more than 2^64 bytes")?;
        crate::memory::check_bytes("--out: every row's logits", bytes)?;
    }
    let prefill = match args.prefill {
        None => ids.len(),
        Some(n) if n == 0 || n > ids.len() => bail!("--prefill {n}: must be between 1 and the number of tokens ({})", ids.len()),
        Some(n) => n,
    };
    // The prompt goes through the cache in chunks (equal to one forward over it), then one
    // token at a time; each chunk's rows are scored as they come, and kept only for --out.
    let mut logits: Vec<f32> = Vec::new();
    let mut nll: Vec<f64> = Vec::with_capacity(ids.len());
    let mut tally = Tally::default();
    let mut take = |first: usize, rows: &[f32]| {
        let n = rows.len() / vocab;
        let end = (first + n).min(ids.len() - 1);
        for i in first..end {
            nll.push(token_nll(&rows[(i - first) * vocab..(i - first + 1) * vocab], ids[i + 1] as usize));
        }
        tally.add_rows(rows, vocab, &ids[first..], 0, n);
        if args.out.is_some() {
            logits.extend_from_slice(rows);
        }
    };
    let mut session = Session::new(&model, policy);
    session.logits_by_chunk(&ids[..prefill], |first, rows| {
        take(first, rows);
        Ok(())
    })?;
    for (i, &id) in ids.iter().enumerate().skip(prefill) {
        take(i, &session.step(id)?);
    }
    let mean = tally.mean_nll();
    println!("{} tokens, mean NLL {mean:.6} (perplexity {:.4})", ids.len(), tally.perplexity());
    if let Some(out) = &args.out {
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(safetensors::Dtype::F32, vec![1, ids.len(), vocab], &bytes)?;
        let data = safetensors::serialize([("logits".to_string(), view)], Some(HashMap::from([("format".to_string(), "pt".to_string())])))?;
        clex_models::write_atomic(out, &data)?;
    }
    if let Some(p) = &args.json {
        let v = serde_json::json!({"ids": ids, "nll": nll, "mean_nll": mean});
        clex_models::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}
