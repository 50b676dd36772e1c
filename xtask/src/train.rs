//! `cargo xtask train`: flags → [`clex_train::trainer::TrainOptions`], run, report.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_models::RopeKind;
use clex_train::precision::Precision;
use clex_train::preset::{Preset, RopeChoice};
use clex_train::trainer::{TrainOptions, train};

/// Flags of `cargo xtask train`; every default is the tiny CLEX run.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Run name: output goes to runs/<name>.
    #[arg(long, default_value = "tiny-clex")]
    name: String,
    /// Output directory instead of runs/<name>. One training process at a time may use it.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Rebuild and run with this backend: flex | wgpu | tch.
    #[arg(long)]
    backend: Option<String>,
    /// Documents (.jsonl, .jsonl.gz, .txt or a directory); default: the bundled corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// An HF tokenizer.json (default: train a byte-level BPE on the train split).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary size of the trained BPE.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Model preset: tiny | small.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Continue pretraining this HF model directory (a non-CLEX model gets a fresh CLEX layer).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// The rope of the run.
    #[arg(long, value_enum, default_value_t = RopeKind::Clex)]
    rope: RopeKind,
    /// Factor of linear / dynamic / yarn.
    #[arg(long, default_value_t = 4.0)]
    rope_factor: f64,
    /// CLEX T_max.
    #[arg(long, default_value_t = 8)]
    max_factor: usize,
    /// Compute dtype of training: f32, or f16 / bf16 over f32 master weights (the CLEX ODE
    /// stays f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Mixture-of-experts models (Mixtral): add the router's load-balancing loss, weighted
    /// by the config's `router_aux_loss_coef`, as transformers does (no effect on dense models).
    #[arg(long)]
    router_aux_loss: bool,
    /// Base of the rope frequencies of a model trained from scratch (HF `rope_theta`).
    #[arg(long, default_value_t = 10000.0)]
    rope_theta: f64,
    /// Training sequence length L.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Total micro-batches.
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Micro-batches between checkpoints (and validations).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Peak learning rate of CLEX's ODE parameters (U and D) under the same schedule as --lr
    /// (default: --lr, one group as in the reference). CLEX models only.
    #[arg(long)]
    clex_lr: Option<f64>,
    /// Fraction of training windows that are synthetic passkey documents (retrieval within
    /// the training length), in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    passkey_fraction: f64,
    /// Warmup micro-batches.
    #[arg(long, default_value_t = 40)]
    warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Gradient clip (per-tensor norm); 0 disables.
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f32,
    /// Seed of weights, data order and CLEX draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Validation windows of length L at each checkpoint and at the end (a quarter as many
    /// at 4L).
    #[arg(long, default_value_t = 32)]
    valid_windows: usize,
    /// Continue from the newest complete checkpoint of this run.
    #[arg(long)]
    resume: bool,
    /// Data-parallel devices (GPUs 0..N; on the CPU, N worker threads). The batch size must
    /// divide evenly.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Plain progress lines even in a terminal (default: burn-train's TUI in a terminal).
    #[arg(long)]
    plain: bool,
}

fn rope(args: &TrainArgs) -> RopeChoice {
    match args.rope {
        RopeKind::Clex => RopeChoice::Clex { max_factor: args.max_factor },
        RopeKind::None => RopeChoice::None,
        RopeKind::Linear => RopeChoice::Linear(args.rope_factor),
        RopeKind::Dynamic => RopeChoice::Dynamic(args.rope_factor),
        RopeKind::Yarn => RopeChoice::Yarn(args.rope_factor),
    }
}

/// The cargo arguments that re-run `args` (this process's arguments after the program
/// name) under `backend`: the same subcommand and flags, minus `--backend`.
fn rerun_args(args: &[String], backend: &str) -> Vec<String> {
    let mut out: Vec<String> =
        ["run", "--release", "-p", "xtask", "--no-default-features", "--features", backend, "--"].iter().map(|s| s.to_string()).collect();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--backend" {
            skip = true;
            continue;
        }
        if !a.starts_with("--backend=") {
            out.push(a.clone());
        }
    }
    out
}

/// Re-runs this command under another backend feature.
fn rerun_with(backend: &str) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cargo_args = rerun_args(&args, backend);
    eprintln!("rebuilding for --backend {backend}: cargo {}", cargo_args.join(" "));
    let mut cmd = crate::cargo();
    cmd.args(cargo_args);
    if backend == "tch" {
        cmd.envs(crate::tch::env()?);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("the command under --backend {backend} failed");
    }
    Ok(())
}

/// Re-runs this command (any subcommand) when `--backend` names another backend than this
/// build's; true when it did, and the caller should stop.
pub(crate) fn rerun_if_other_backend(backend: Option<&str>) -> anyhow::Result<bool> {
    let Some(b) = backend else { return Ok(false) };
    if !["flex", "wgpu", "tch"].contains(&b) {
        bail!("--backend {b}: accepted values: flex, wgpu, tch");
    }
    if clex_models::backend::name().starts_with(b) {
        return Ok(false);
    }
    rerun_with(b)?;
    Ok(true)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if rerun_if_other_backend(args.backend.as_deref())? {
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().context("locating the workspace")?;
    let mut o = TrainOptions::tiny(args.run_dir.clone().unwrap_or_else(|| root.join("runs").join(&args.name)));
    if let Some(d) = &args.data {
        o.data = d.clone();
    }
    o.tokenizer = args.tokenizer.clone();
    o.vocab_size = args.vocab_size;
    o.preset = Preset::parse(&args.preset).with_context(|| format!("--preset {}: accepted values: tiny, small", args.preset))?;
    o.init_from = args.init_from.clone();
    o.rope = rope(&args);
    // Checked here too (the config rejects it as well) so a typo fails before tokenizing.
    if !(args.rope_theta.is_finite() && args.rope_theta > 0.0) {
        bail!("--rope-theta {}: must be a number > 0", args.rope_theta);
    }
    o.rope_theta = args.rope_theta;
    o.precision = Precision::parse(&args.dtype).with_context(|| format!("--dtype {}: accepted values: f32, f16, bf16", args.dtype))?;
    o.router_aux_loss = args.router_aux_loss;
    o.seq_len = args.seq_len;
    o.batch_size = args.batch_size;
    o.grad_accumulation = args.grad_accum;
    o.steps = args.steps;
    o.checkpoint_every = args.checkpoint_every.min(args.steps.max(1));
    o.lr = args.lr;
    if let Some(lr) = args.clex_lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
        bail!("--clex-lr {lr}: must be a number > 0");
    }
    o.clex_lr = args.clex_lr;
    o.warmup = args.warmup;
    o.passkey_fraction = args.passkey_fraction;
    o.weight_decay = args.weight_decay;
    o.grad_clip = (args.grad_clip > 0.0).then_some(args.grad_clip);
    o.seed = args.seed;
    o.resume = args.resume;
    o.valid_windows = args.valid_windows;
    o.devices = args.devices;
    o.plain_progress = args.plain;
    eprintln!("backend: {}; run directory: {}", clex_models::backend::name(), o.run_dir.display());
    // TrainError's message already carries its cause: one line, without anyhow's chain.
    let report = train(&o).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "\ntrained {} micro-batches in {:.0} s ({} train / {} validation tokens)",
        report.steps, report.wall_s, report.tokens.0, report.tokens.1
    );
    println!("validation (inference semantics, t = ceil(N/P)):");
    for (len, nll, n) in &report.validation {
        println!("  length {len:>5}: mean NLL {nll:.4}, perplexity {:.2} over {n} windows", nll.exp());
    }
    let shown = report.model_dir.strip_prefix(std::env::current_dir().unwrap_or_default()).unwrap_or(&report.model_dir).to_path_buf();
    println!("\nmodel: {}", shown.display());
    println!("try it:\n  cargo run -p clex-cli -- generate -m {} -p \"ROMEO:\" -n 200", shown.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rerun_args;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rerun_keeps_every_flag_but_backend() {
        let args = strings(&["train", "--backend", "wgpu", "--steps", "10", "--backend=tch", "--name", "x"]);
        let got = rerun_args(&args, "wgpu");
        assert_eq!(
            got,
            strings(&[
                "run",
                "--release",
                "-p",
                "xtask",
                "--no-default-features",
                "--features",
                "wgpu",
                "--",
                "train",
                "--steps",
                "10",
                "--name",
                "x"
            ])
        );
    }
}
