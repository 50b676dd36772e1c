//! `clex perplexity`: perplexity and next-token accuracy across evaluation lengths, under
//! the CLEX paper's protocol (non-overlapping windows, one forward each), the official
//! evaluation's KV-cache chunks, or a sliding window.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_eval::corpus::{Split, read_documents};
use clex_models::backend::{self, Inference};
use clex_models::{CachePolicy, CausalLm, ForwardOptions};

use clex_eval::eval::Tally;

use crate::common::{ModelSpec, RopeOverride, default_bos, ids_tensor, model_tokenizer, parse_dtype, require_model};

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
    /// Documents to use: all | train | validation (the corpus's fixed sha256 split).
    #[arg(long, default_value = "all")]
    split: String,
    /// Evaluation lengths, comma-separated.
    #[arg(long, conflicts_with = "up_to_factor")]
    lengths: Option<String>,
    /// Lengths P, 2P, 4P, ... up to this multiple of max_position_embeddings.
    #[arg(long)]
    up_to_factor: Option<usize>,
    /// chunks | kv-chunks | sliding.
    #[arg(long, default_value = "chunks")]
    protocol: String,
    /// Chunk size of the kv-chunks protocol (default: P).
    #[arg(long)]
    chunk: Option<usize>,
    /// Stride of the sliding protocol (default: half the length).
    #[arg(long)]
    stride: Option<usize>,
    /// Tokens evaluated per length at most.
    #[arg(long, default_value_t = 32768)]
    max_tokens: usize,
    /// Start every document with the model's BOS token (the reference's packing; default: a
    /// GGUF's tokenizer.ggml.add_bos_token, a directory's tokenizer_config.json add_bos_token,
    /// else true).
    #[arg(long, action = clap::ArgAction::Set)]
    bos: Option<bool>,
    /// Compute dtype: f32 | f16 | bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw perplexity against length (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    rope: RopeOverride,
}

fn logits_of(model: &CausalLm<Inference>, ids: &[u32], cache: Option<&mut clex_models::KvCache<Inference>>) -> anyhow::Result<Vec<f32>> {
    let device = model.embed.weight.val().device();
    let out = model.forward_with(ids_tensor(ids, &device), cache, &ForwardOptions::default())?;
    out.logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// How windows are fed and scored.
pub struct Protocol<'a> {
    /// chunks | kv-chunks | sliding.
    pub kind: &'a str,
    /// kv-chunks: tokens per cached chunk.
    pub chunk: usize,
    /// sliding: window step.
    pub stride: usize,
    /// Tokens evaluated at most.
    pub max_tokens: usize,
}

/// Evaluates one length under a protocol; returns the tally and the number of windows.
pub fn evaluate(
    model: &CausalLm<Inference>,
    stream: &[u32],
    len: usize,
    proto: &Protocol<'_>,
    on_window: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<(Tally, usize)> {
    let Protocol { kind: protocol, chunk, stride, max_tokens } = *proto;
    let vocab = model.config().vocab_size;
    let mut tally = Tally::default();
    let mut windows = 0;
    let limit = stream.len().min(max_tokens.max(len));
    match protocol {
        "chunks" | "kv-chunks" => {
            let total = limit / len;
            for w in stream[..limit].chunks_exact(len) {
                windows += 1;
                on_window(windows, total);
                if protocol == "chunks" {
                    tally.add(&logits_of(model, w, None)?, vocab, w, 0);
                } else {
                    // Each chunk scores only its own next-token predictions, as the official eval.
                    let mut cache = model.new_cache(CachePolicy::Reference);
                    for piece in w.chunks(chunk) {
                        let logits = logits_of(model, piece, Some(&mut cache))?;
                        tally.add(&logits, vocab, piece, 0);
                    }
                }
            }
        }
        "sliding" => {
            let mut prev_end = 0;
            let mut begin = 0;
            while prev_end < limit {
                let end = (begin + len).min(limit);
                let w = &stream[begin..end];
                // Score only the targets not scored by the previous window.
                let first_new = (prev_end.max(begin + 1) - begin).saturating_sub(1);
                tally.add(&logits_of(model, w, None)?, vocab, w, first_new);
                windows += 1;
                on_window(windows, limit.saturating_sub(len) / stride + 1);
                prev_end = end;
                if end == limit {
                    break;
                }
                begin += stride;
            }
        }
        other => bail!("--protocol {other}: accepted values: chunks, kv-chunks, sliding"),
    }
    Ok((tally, windows))
}

fn progress(msg: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[2K{msg}");
    }
}

pub fn run(args: PerplexityArgs) -> anyhow::Result<()> {
    for m in &args.model {
        require_model(m)?;
    }
    if !["chunks", "kv-chunks", "sliding"].contains(&args.protocol.as_str()) {
        bail!("--protocol {}: accepted values: chunks, kv-chunks, sliding", args.protocol);
    }
    let split = match args.split.as_str() {
        "all" => None,
        "train" => Some(Split::Train),
        "validation" => Some(Split::Validation),
        other => bail!("--split {other}: accepted values: all, train, validation"),
    };
    let dtype = parse_dtype(&args.dtype)?;
    let (tok, tok_label) = model_tokenizer(&args.model[0], args.tokenizer.as_deref())?;
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
    for model_dir in &args.model {
        let model = ModelSpec::read(model_dir, &args.rope)?.load(&backend::device(args.device), dtype)?;
        if tok.get_vocab_size(true) > model.config().vocab_size {
            bail!(
                "{tok_label}: tokenizer has {} entries but {} has vocab_size {}",
                tok.get_vocab_size(true),
                model_dir.display(),
                model.config().vocab_size
            );
        }
        let p = model.rope().max_position_embeddings;
        let lengths: Vec<usize> = match (&args.lengths, args.up_to_factor) {
            (Some(s), _) => s
                .split(',')
                .map(|x| x.trim().parse::<usize>().with_context(|| format!("--lengths: `{x}` is not a length")))
                .collect::<Result<_, _>>()?,
            (None, Some(f)) => std::iter::successors(Some(p), |l| Some(l * 2)).take_while(|l| *l <= f * p).collect(),
            (None, None) => vec![p, 2 * p, 4 * p],
        };
        if lengths.iter().any(|&l| l < 2) {
            bail!("--lengths: every length must be at least 2");
        }
        let bos = args.bos.map_or_else(|| default_bos(model_dir), Ok)?;
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
            args.protocol,
            args.data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            docs.len(),
            args.split,
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
            let chunk = args.chunk.unwrap_or(p).max(2);
            let stride = args.stride.unwrap_or(len / 2).max(1);
            let seq = if args.protocol == "kv-chunks" { chunk.min(len) } else { len };
            crate::memory::check(&model, &format!("length {len}"), seq, len)?;
            let mut report = |i: usize, n: usize| progress(&format!("length {len}: window {i}/{n}"));
            let proto = Protocol { kind: &args.protocol, chunk, stride, max_tokens: args.max_tokens };
            let (t, windows) = evaluate(&model, &stream, len, &proto, &mut report)?;
            progress("");
            let mean = t.nll / t.count.max(1) as f64;
            let acc = t.correct as f64 / t.count.max(1) as f64;
            println!("{len:>8} {windows:>8} {:>9} {mean:>10.4} {:>10.3} {acc:>9.4}", t.count, mean.exp());
            results.push(serde_json::json!({"length": len, "windows": windows, "tokens": t.count, "mean_nll": mean, "perplexity": mean.exp(), "accuracy": acc}));
            curve.push((len as f64, mean.exp()));
        }
        all.push(serde_json::json!({"model": model_dir, "tokens": stream.len(), "results": results}));
        curves.push((model_dir.display().to_string(), curve));
    }
    if let Some(j) = &args.json {
        let v = serde_json::json!({"protocol": args.protocol, "models": all});
        clex_models::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    if let Some(plot) = &args.plot {
        let series: Vec<clex_eval::plot::Series<'_>> =
            curves.iter().map(|(n, c)| clex_eval::plot::Series { name: n, points: c.clone(), markers: false }).collect();
        let svg = clex_eval::plot::line_chart(
            &format!("perplexity vs length ({} protocol)", args.protocol),
            "length (tokens, log scale)",
            "perplexity",
            &series,
            true,
        );
        clex_models::write_atomic(plot, svg.as_bytes())?;
    }
    Ok(())
}
