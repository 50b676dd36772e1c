//! `clex score`: logits and per-token NLL of a fixed token sequence, for comparison with
//! other implementations; optionally fed as a prefill plus one token at a time through the
//! KV cache.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_models::ForwardOptions;
use clex_models::backend::{self, Inference};
use safetensors::{Dtype, tensor::TensorView};

use clex_eval::eval::token_nll;

use crate::common::{ids_tensor, load_model, model_tokenizer, parse_cache_policy, parse_dtype};

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
    #[arg(long, conflicts_with_all = ["ids_file", "text"])]
    ids: Option<String>,
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
    /// KV cache policy with --prefill: reference | recompute.
    #[arg(long, default_value = "reference")]
    cache_policy: String,
    /// Compute dtype: f32 | f16 | bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

fn token_ids(args: &ScoreArgs, model_dir: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    if let Some(s) = &args.ids {
        return s.split(',').map(|x| x.trim().parse::<u32>().with_context(|| format!("--ids: `{x}` is not a token id"))).collect();
    }
    if let Some(p) = &args.ids_file {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON array of token ids", p.display()));
    }
    if let Some(t) = &args.text {
        let (tok, _) = model_tokenizer(model_dir, args.tokenizer.as_deref())?;
        return Ok(tok.encode(t.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec());
    }
    bail!("give the tokens with --ids, --ids-file or --text")
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    crate::common::require_model(&args.model)?;
    let dtype = parse_dtype(&args.dtype)?;
    let policy = parse_cache_policy(&args.cache_policy)?;
    let ids = token_ids(&args, &args.model)?;
    if ids.is_empty() {
        bail!("no tokens to score");
    }
    let device = backend::device(args.device);
    let model = load_model(&args.model, &device, dtype)?;
    let vocab = model.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    crate::memory::check(&model, "scoring", args.prefill.unwrap_or(ids.len()), ids.len())?;
    let tensor = |v: &[u32]| ids_tensor(v, &device);
    let host = |t: burn::tensor::Tensor<Inference, 3>| t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"));
    let mut logits: Vec<f32> = Vec::with_capacity(ids.len() * vocab);
    match args.prefill {
        None => logits.extend(host(model.forward(tensor(&ids))?)?),
        Some(n) => {
            if n == 0 || n > ids.len() {
                bail!("--prefill {n}: must be between 1 and the number of tokens ({})", ids.len());
            }
            let mut cache = model.new_cache(policy);
            logits.extend(host(model.forward_with(tensor(&ids[..n]), Some(&mut cache), &ForwardOptions::default())?.logits)?);
            for i in n..ids.len() {
                logits.extend(host(model.forward_with(tensor(&ids[i..i + 1]), Some(&mut cache), &ForwardOptions::default())?.logits)?);
            }
        }
    }
    // NLL of token i+1 given the prefix up to i.
    let nll: Vec<f64> = (0..ids.len() - 1).map(|i| token_nll(&logits[i * vocab..(i + 1) * vocab], ids[i + 1] as usize)).collect();
    let mean = if nll.is_empty() { f64::NAN } else { nll.iter().sum::<f64>() / nll.len() as f64 };
    println!("{} tokens, mean NLL {mean:.6} (perplexity {:.4})", ids.len(), mean.exp());
    if let Some(out) = &args.out {
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![1, ids.len(), vocab], &bytes)?;
        let data = safetensors::serialize([("logits".to_string(), view)], Some(HashMap::from([("format".to_string(), "pt".to_string())])))?;
        clex_models::write_atomic(out, &data)?;
    }
    if let Some(p) = &args.json {
        let v = serde_json::json!({"ids": ids, "nll": nll, "mean_nll": mean});
        clex_models::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}
