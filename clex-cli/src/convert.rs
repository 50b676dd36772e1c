//! `clex convert`: a llama.cpp GGUF file as an HF model directory (config.json, f32
//! model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clex_models::backend::{self, Inference};

/// Arguments of `clex convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The .gguf file (LLaMA architecture; F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q4_K/Q5_K/Q6_K tensors).
    #[arg(long)]
    gguf: PathBuf,
    /// The HF directory to write (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing model in --out.
    #[arg(long)]
    force: bool,
    /// GPU index for GPU backends (the model is built once to check every tensor).
    #[arg(long)]
    device: Option<usize>,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if !args.gguf.exists() {
        bail!("{}: GGUF file not found", args.gguf.display());
    }
    // Only a regular file is opened (a FIFO would block), and only weights that fit.
    let source = clex_models::ModelSource::open(&args.gguf)?;
    crate::memory::check_load(&source, source.config(), burn::tensor::DType::F32)?;
    drop(source);
    if args.out.join("config.json").exists() && !args.force {
        bail!("{}: already holds a model (config.json); pass --force to replace it", args.out.display());
    }
    let start = Instant::now();
    let done = clex_models::convert_gguf::<Inference>(&args.gguf, &args.out, &backend::device(args.device))?;
    let mut files = vec!["config.json", "model.safetensors", "generation_config.json"];
    match &done.tokenizer_skipped {
        None => files.extend(["tokenizer.json", "tokenizer_config.json"]),
        Some(why) => eprintln!("warning: no tokenizer.json written: {why}"),
    }
    let bytes = std::fs::metadata(args.out.join("model.safetensors"))?.len();
    println!(
        "{} → {}: {} ({:.1} MB of f32 weights) in {:.1} s",
        args.gguf.display(),
        args.out.display(),
        files.join(", "),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
