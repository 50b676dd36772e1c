//! `clex score`: logits and per-token NLL of a fixed token sequence, for comparison with
//! other implementations; optionally fed as a prefill plus one token at a time through the
//! KV cache ([`Session`]).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_eval::eval::{Tally, token_nll};
use clex_models::backend::{self, Inference};
use clex_models::session::token_tensor;
use clex_models::{CachePolicy, ModelSource, Session};
use safetensors::tensor::TensorView;

use crate::args::{self, CachePolicyFlag};

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
}

fn token_ids(args: &ScoreArgs, source: &ModelSource) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &args.ids {
        return Ok(ids.clone());
    }
    if let Some(p) = &args.ids_file {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON array of token ids", p.display()));
    }
    if let Some(t) = &args.text {
        let (tok, _) = crate::args::tokenizer(args.tokenizer.as_deref(), source)?;
        return Ok(tok.encode(t.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec());
    }
    bail!("give the tokens with --ids, --ids-file or --text")
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let source = ModelSource::open(&args.model)?;
    let (dtype, policy) = (burn::tensor::DType::from(args.dtype), CachePolicy::from(args.cache_policy));
    let ids = token_ids(&args, &source)?;
    if ids.is_empty() {
        bail!("no tokens to score");
    }
    let device = backend::device(args.device);
    let model = source.load::<Inference>(&device, dtype)?;
    let vocab = model.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    crate::memory::check(&model, "scoring", args.prefill.unwrap_or(ids.len()), ids.len())?;
    let mut logits: Vec<f32> = Vec::with_capacity(ids.len() * vocab);
    match args.prefill {
        None => logits.extend(
            model
                .forward(token_tensor(&ids, &device))?
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ),
        Some(n) => {
            if n == 0 || n > ids.len() {
                bail!("--prefill {n}: must be between 1 and the number of tokens ({})", ids.len());
            }
            let mut session = Session::new(&model, policy);
            logits.extend(session.logits(&ids[..n])?);
            for &id in &ids[n..] {
                logits.extend(session.step(id)?);
            }
        }
    }
    // NLL of token i+1 given the prefix up to i.
    let nll: Vec<f64> = (0..ids.len() - 1).map(|i| token_nll(&logits[i * vocab..(i + 1) * vocab], ids[i + 1] as usize)).collect();
    let mut tally = Tally::default();
    tally.add(&logits, vocab, &ids, 0);
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
