//! `clex generate`: load a model (HF directory or GGUF) and its tokenizer, stream a
//! continuation.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clex_models::backend::{self, Inference};
use clex_models::{GenerateOptions, ModelError, ModelSource, Session};

use crate::args::{self, LoadFlags, RopeOverride, RunFlags, SamplingFlags};

/// Arguments of `clex generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// HF model directory (config.json + safetensors) or llama.cpp .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// tokenizer.json (default: MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The prompt.
    #[arg(short = 'p', long, default_value = "")]
    prompt: String,
    /// Read the prompt from a file instead.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 100)]
    sample_len: usize,
    /// Stop after this many tokens in total (default: P·T_max for CLEX, else no limit).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Start the prompt with the model's BOS token (default: a GGUF's
    /// tokenizer.ggml.add_bos_token, a directory's tokenizer_config.json add_bos_token, else true).
    #[arg(long, action = clap::ArgAction::Set)]
    bos: Option<bool>,
    #[command(flatten)]
    sampling: SamplingFlags,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    rope: RopeOverride,
    #[command(flatten)]
    load: LoadFlags,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let source: ModelSource = args.load.open(&args.model)?;
    let run_config = args.rope.config(&source)?;
    let (tokenizer, _) = args::tokenizer(args.tokenizer.as_deref(), &source)?;
    let prompt = match &args.prompt_file {
        Some(p) => args::read_flag_file("--prompt-file", p)?,
        None => args.prompt.clone(),
    };
    crate::memory::check_load(&source, &run_config, args.run.dtype.into())?;
    let device = backend::device(args.run.device);
    let model = source.load_with::<Inference>(run_config, &device, args.run.dtype.into())?;
    let config = model.config();
    let bos = if args.bos.map_or_else(|| source.add_bos(), Ok)? { config.bos_token_id } else { None };
    let ids: Vec<u32> =
        tokenizer.encode(prompt.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?.get_ids().to_vec();
    let ids: Vec<u32> = match bos {
        Some(b) if ids.first() != Some(&b) => std::iter::once(b).chain(ids).collect(),
        _ => ids,
    };
    let total = ids.len().checked_add(args.sample_len).context("-n: the prompt and the tokens to generate are more than 2^64")?;
    crate::memory::check(&model, "the prompt", ids.len(), total)?;
    let options = GenerateOptions {
        sampling: args.sampling.params(),
        max_new_tokens: args.sample_len,
        max_seq_len: args.max_seq_len,
        stop_tokens: config.eos_token_ids.clone(),
    };
    let mut session = Session::new(&model, args.run.cache_policy.into());
    print!("{prompt}");
    std::io::stdout().flush().ok();
    let t_prompt = Instant::now();
    let mut tokens = session.generate(&ids, options).map_err(|e| match e {
        ModelError::TooLong { .. } => anyhow::anyhow!("{e} (--max-seq-len)"),
        e => e.into(),
    })?;
    let prompt_s = t_prompt.elapsed().as_secs_f64();
    let (mut generated, mut printed) = (Vec::new(), 0usize);
    let t_gen = Instant::now();
    let mut beyond_warned = false;
    while let Some(next) = tokens.next() {
        generated.push(next?);
        // Decode everything generated so far and print the new part, unless it ends in a
        // split UTF-8 character.
        let text = tokenizer.decode(&generated, true).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        // A tokenizer may rewrite earlier text; print nothing rather than split a character.
        if let Some(new) = text.get(printed..).filter(|new| !new.is_empty() && !text.ends_with('\u{FFFD}')) {
            print!("{new}");
            std::io::stdout().flush().ok();
            printed = text.len();
        }
        if tokens.session().beyond_max() && !beyond_warned {
            eprintln!("\n[warning: {} tokens is beyond P·T_max; θ(T_max) is extrapolated]", tokens.session().tokens().len());
            beyond_warned = true;
        }
    }
    println!();
    let gen_s = t_gen.elapsed().as_secs_f64();
    let n_prompt = ids.len();
    eprintln!(
        "{n_prompt} prompt tokens: {:.1} tokens/s; {} generated tokens: {:.1} tokens/s; backend {}; cache {:.1} KiB",
        n_prompt as f64 / prompt_s.max(1e-9),
        generated.len(),
        generated.len() as f64 / gen_s.max(1e-9),
        backend::name(),
        session.cache().memory_bytes() as f64 / 1024.0
    );
    Ok(())
}
