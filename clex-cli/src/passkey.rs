//! `clex passkey`: the standard synthetic retrieval test (see [`clex_eval::passkey`]): a
//! random number hidden at a given depth of filler text of a given length must come back by
//! greedy decoding. This file reads the flags and prints.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_eval::passkey::PasskeyTask;
use clex_models::backend::{self, Inference};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::args::{self, Dtype, LoadFlags};

/// Tokens the greedy answer of a trial may take (clex-eval's passkey reads 8).
const ANSWER_TOKENS: usize = 8;
/// Most trials per cell.
const MAX_TRIALS: u64 = 100_000;

/// Arguments of `clex passkey`.
#[derive(clap::Args, Debug)]
pub struct PasskeyArgs {
    /// GPU index for GPU backends.
    #[arg(long)]
    device: Option<usize>,
    /// HF model directory or .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// tokenizer.json (default MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Prompt lengths in tokens, comma-separated (default P, 2P, 4P).
    #[arg(long, value_delimiter = ',')]
    lengths: Option<Vec<usize>>,
    /// Depths of the key as fractions of the filler, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1", value_parser = args::fraction)]
    depths: Vec<f64>,
    /// Trials (random keys) per length and depth.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=MAX_TRIALS))]
    trials: u64,
    /// Seed of the keys.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Write the results as JSON here (per cell, and per trial: key, needle position, answer).
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    load: LoadFlags,
}

pub fn run(args: PasskeyArgs) -> anyhow::Result<()> {
    let device = backend::device(args.device);
    if args.depths.iter().any(|d| !(0.0..=1.0).contains(d)) {
        bail!("--depths: every depth must be in [0, 1]");
    }
    let source = args.load.open(&args.model)?;
    // The tokenizer is checked against the model (every id it can produce) before loading.
    let (tok, _) = args::tokenizer(args.tokenizer.as_deref(), &source)?;
    crate::memory::check_load(&source, source.config(), args.dtype.into())?;
    let model = source.load::<Inference>(&device, args.dtype.into())?;
    let p = model.rope().max_position_embeddings;
    let lengths: Vec<usize> = match &args.lengths {
        Some(l) => l.clone(),
        None => [1, 2, 4].iter().filter_map(|k| p.checked_mul(*k)).collect(),
    };
    for &len in &lengths {
        // Each trial is one forward over the prompt, then the answer through the cache.
        let total = len.checked_add(ANSWER_TOKENS).context("--lengths: a length near 2^64")?;
        crate::memory::check(&model, &format!("--lengths {len}"), len, total)?;
    }
    let trials = args.trials as usize;
    let bos = if source.add_bos()? { model.config().bos_token_id } else { None };
    let task = PasskeyTask::new(&tok, bos)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    println!("{:>8} {:>6} {:>8} {:>9}", "length", "depth", "correct", "accuracy");
    let mut cells = Vec::new();
    for &len in &lengths {
        for &depth in &args.depths {
            let cell = task.run_cell(&model, len, depth, trials, &mut rng).with_context(|| format!("--lengths {len}"))?;
            let (correct, acc) = (cell.correct(), cell.accuracy());
            println!("{len:>8} {depth:>6.2} {correct:>4}/{:<3} {acc:>9.3}", args.trials);
            let detail: Vec<_> = cell
                .trials
                .iter()
                .map(|t| {
                    serde_json::json!({"key": t.key, "prompt_tokens": t.prompt_tokens, "needle_at": t.needle_at,
                        "needle_tokens": t.needle_tokens, "answer": t.answer})
                })
                .collect();
            cells.push(serde_json::json!({"length": len, "depth": depth, "trials": args.trials, "correct": correct, "accuracy": acc, "detail": detail}));
        }
    }
    if let Some(j) = &args.json {
        let v = serde_json::json!({"model": args.model, "seed": args.seed, "results": cells});
        clex_models::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}
