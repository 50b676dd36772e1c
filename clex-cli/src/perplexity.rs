//! `clex perplexity`: perplexity and next-token accuracy across evaluation lengths, under
//! the CLEX paper's protocol (non-overlapping windows, one forward each), the official
//! evaluation's KV-cache chunks, or a sliding window. The evaluation itself is
//! [`clex_eval::eval::evaluate`]; this file reads the flags, builds the token stream and
//! prints.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_eval::corpus::{Split, read_documents};
use clex_eval::eval::{Limits, Protocol, evaluate};
use clex_eval::plot::{Series, perplexity_svg};
use clex_models::ModelSource;
use clex_models::backend::{self, Inference};

use crate::args::{Dtype, LoadFlags, RopeOverride};

/// `--protocol`: how windows are fed and scored (see [`Protocol`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolFlag {
    /// Non-overlapping windows, one forward each (the CLEX paper's protocol).
    Chunks,
    /// Non-overlapping windows fed --chunk tokens at a time through the KV cache (the
    /// official evaluation).
    KvChunks,
    /// A window every --stride tokens, each token scored once.
    Sliding,
}

/// `--split`: which documents of the corpus's fixed sha256 split.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitFlag {
    /// Every document.
    All,
    /// Training documents only.
    Train,
    /// Held-out documents only.
    Validation,
}

impl SplitFlag {
    fn split(self) -> Option<Split> {
        match self {
            SplitFlag::All => None,
            SplitFlag::Train => Some(Split::Train),
            SplitFlag::Validation => Some(Split::Validation),
        }
    }
}

/// Arguments of `clex perplexity`.
#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// GPU index for GPU backends.
    #[arg(long)]
    device: Option<usize>,
    /// HF model directory or .gguf file (repeatable: several models are evaluated on the
    /// same tokens and drawn in one plot; they must share the tokenizer).
    #[arg(short = 'm', long, required = true)]
    model: Vec<PathBuf>,
    /// tokenizer.json (default: the first model's tokenizer.json, or its GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Text files, .jsonl(.gz) with a `text` field, or directories (repeatable).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Documents to use (the corpus's fixed sha256 split).
    #[arg(long, value_enum, default_value_t = SplitFlag::All)]
    split: SplitFlag,
    /// Evaluation lengths, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "up_to_factor")]
    lengths: Option<Vec<usize>>,
    /// Lengths P, 2P, 4P, ... up to this multiple of max_position_embeddings.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    up_to_factor: Option<u64>,
    /// How windows are fed and scored.
    #[arg(long, value_enum, default_value_t = ProtocolFlag::Chunks)]
    protocol: ProtocolFlag,
    /// Chunk size of the kv-chunks protocol (default: P; at least 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    chunk: Option<u64>,
    /// Stride of the sliding protocol (default: half the length; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    stride: Option<u64>,
    /// Tokens evaluated per length at most.
    #[arg(long, default_value_t = 32768)]
    max_tokens: usize,
    /// Tokens per forward at most under the chunks protocol (at least one window; several
    /// windows of a short length share a forward).
    #[arg(long, default_value_t = BATCH_TOKENS)]
    batch_tokens: usize,
    /// Start every document with the model's BOS token (the reference's packing; default: a
    /// GGUF's tokenizer.ggml.add_bos_token, a directory's tokenizer_config.json add_bos_token,
    /// else true).
    #[arg(long, action = clap::ArgAction::Set)]
    bos: Option<bool>,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw perplexity against length (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    rope: RopeOverride,
    #[command(flatten)]
    load: LoadFlags,
}

/// Default of `--batch-tokens`: batches of short windows without a large logits tensor.
const BATCH_TOKENS: usize = 4096;

fn progress(msg: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[2K{msg}");
    }
}

pub fn run(args: PerplexityArgs) -> anyhow::Result<()> {
    let sources = args.model.iter().map(|m| args.load.open(m)).collect::<Result<Vec<ModelSource>, _>>()?;
    let split = args.split.split();
    let (tok, tok_label) = crate::args::tokenizer(args.tokenizer.as_deref(), &sources[0])?;
    for data in &args.data {
        // A FIFO or device would block or never end; directories are walked by the reader.
        if !data.is_dir() {
            clex_models::weights::open_regular(data).context("--data")?;
        }
    }
    let docs: Vec<_> = args
        .data
        .iter()
        .map(|d| read_documents(d))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|d| split.is_none_or(|s| d.split() == s))
        .collect();
    let mut all = Vec::new();
    let mut curves = Vec::new();
    for (model_dir, source) in args.model.iter().zip(&sources) {
        // The tokenizer was checked against the first model; the others must take its ids too.
        source.check_tokenizer(&tok, &tok_label)?;
        let config = args.rope.config(source)?;
        crate::memory::check_load(source, &config, args.dtype.into())?;
        let model = source.load_with::<Inference>(config, &backend::device(args.device), args.dtype.into())?;
        let p = model.rope().max_position_embeddings;
        let lengths: Vec<usize> = match (&args.lengths, args.up_to_factor) {
            (Some(l), _) => l.clone(),
            (None, Some(f)) => {
                // P, 2P, 4P, ... while <= f·P, in u64 with checked products (f·P and the
                // doubling may pass 2^64).
                let limit = (p as u64).saturating_mul(f);
                std::iter::successors(Some(p as u64), |l| l.checked_mul(2)).take_while(|l| *l <= limit).map(|l| l as usize).collect()
            }
            (None, None) => [1, 2, 4].iter().filter_map(|k| p.checked_mul(*k)).collect(),
        };
        if lengths.iter().any(|&l| l < 2) {
            bail!("--lengths: every length must be at least 2");
        }
        let bos = args.bos.map_or_else(|| source.add_bos(), Ok)?;
        let mut stream = Vec::new();
        for doc in &docs {
            if bos && let Some(b) = model.config().bos_token_id {
                stream.push(b);
            }
            stream.extend(tok.encode(doc.text.as_str(), false).map_err(|e| anyhow::anyhow!("tokenizing {}: {e}", doc.id))?.get_ids());
        }
        println!(
            "model {} | rope {} (P = {p}) | protocol {} | data {} ({} {} documents, {} tokens) | tokenizer {tok_label}",
            model_dir.display(),
            model.rope().scaling.kind(),
            flag_value(args.protocol),
            args.data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            docs.len(),
            flag_value(args.split),
            stream.len(),
        );
        println!("{:>8} {:>8} {:>9} {:>10} {:>10} {:>9}", "length", "windows", "tokens", "mean NLL", "PPL", "accuracy");
        let mut results = Vec::new();
        let mut curve = Vec::new();
        for &len in &lengths {
            if stream.len() < len {
                eprintln!("{len}: not enough tokens ({} available); skipped", stream.len());
                continue;
            }
            let protocol = match args.protocol {
                ProtocolFlag::Chunks => Protocol::Chunks,
                ProtocolFlag::KvChunks => Protocol::KvChunks { chunk: args.chunk.map_or(p, |c| c as usize).max(2) },
                ProtocolFlag::Sliding => Protocol::Sliding { stride: args.stride.map_or(len / 2, |s| s as usize).max(1) },
            };
            let limits = Limits { max_tokens: args.max_tokens, max_batch_tokens: args.batch_tokens };
            let batch = if protocol == Protocol::Chunks { (args.batch_tokens / len).max(1) } else { 1 };
            crate::memory::check_batch(&model, &format!("length {len}"), batch, protocol.forward_len(len), len)?;
            let mut report = |i: usize, n: usize| progress(&format!("length {len}: window {i}/{n}"));
            let score = evaluate(&model, &stream, len, protocol, limits, &mut report)?;
            progress("");
            let (t, windows) = (score.tally, score.windows);
            let (mean, acc) = (t.mean_nll(), t.accuracy());
            println!("{len:>8} {windows:>8} {:>9} {mean:>10.4} {:>10.3} {acc:>9.4}", t.count, t.perplexity());
            results.push(serde_json::json!({"length": len, "windows": windows, "tokens": t.count, "mean_nll": mean, "perplexity": t.perplexity(), "accuracy": acc}));
            curve.push((len as f64, t.perplexity()));
        }
        all.push(serde_json::json!({"model": model_dir, "tokens": stream.len(), "results": results}));
        curves.push((model_dir.display().to_string(), curve));
    }
    if let Some(j) = &args.json {
        let v = serde_json::json!({"protocol": flag_value(args.protocol), "models": all});
        clex_models::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    if let Some(plot) = &args.plot {
        let series: Vec<Series<'_>> = curves.iter().map(|(n, c)| Series { name: n, points: c.clone(), markers: false }).collect();
        let svg = perplexity_svg(&format!("Perplexity against length ({} protocol)", flag_value(args.protocol)), &series)?;
        clex_models::write_atomic(plot, svg.as_bytes())?;
    }
    Ok(())
}

/// A flag's value as typed on the command line (kv-chunks, validation, ...).
fn flag_value(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}
