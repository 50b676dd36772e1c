//! A whole training run: data, tokenizer, model, burn-train learner with atomic checkpoints
//! and exact resume, then the final model as an HF directory and its evaluation.
//!
//! Crash safety: the run directory is locked for the whole run ([`RunLock`]); every file a
//! resume reads (tokenizer, checkpoints) is written atomically; a resumed run first drops
//! what a crash left after its checkpoint; a checkpoint that cannot be written stops the run
//! with [`TrainError::CheckpointWrite`] and leaves the one before it usable. A run killed at
//! any moment and resumed with `resume` ends with the uninterrupted run's weights
//! (`xtask/tests/train_crash.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Device};
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{ExecutionStrategy, Learner, LearningComponentsTypes, MultiDeviceOptim, SupervisedTraining};
use clex_core::ClexBackend;
use clex_models::{CausalLm, ModelConfig, ModelSource, init_model, save_model};
use rand::SeedableRng;

use crate::batch::{BatchGroups, LmBatch, LmBatcher};
use crate::checkpoint::{AtomicRecorder, discard_after, latest_checkpoint, verify_checkpoint, write_durable};
use crate::error::{TrainError, io};
use crate::loader::StepLoader;
use crate::lr_schedule::WarmupCosine;
use crate::metrics::LmMetric;
use crate::monitor::StepMonitor;
use crate::packing::pack;
use crate::param_groups::{OdeLrGroups, ode_lr_ratio};
use crate::precision::Precision;
use crate::preset::{Preset, RopeChoice, preset_config};
use crate::renderer::PlainRenderer;
use crate::run_lock::RunLock;
use crate::step::{ClexLm, StepSettings};
use crate::tokenizer::{boundary_id, encode, load_tokenizer, train_bpe};
use clex_eval::corpus::{read_documents, split_documents};
use clex_models::backend::{self, Inference, Training};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Output directory (`runs/<name>`).
    pub run_dir: PathBuf,
    /// Documents: a .jsonl(.gz), text file or directory.
    pub data: PathBuf,
    /// An HF tokenizer.json; otherwise a byte-level BPE is trained on the train split.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of the trained BPE.
    pub vocab_size: usize,
    /// Model size when training from scratch.
    pub preset: Preset,
    /// Continue pretraining this HF model directory instead.
    pub init_from: Option<PathBuf>,
    /// Rope of the run.
    pub rope: RopeChoice,
    /// Base of the rope frequencies when training from scratch (HF `rope_theta`).
    pub rope_theta: f64,
    /// Training sequence length L.
    pub seq_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accumulation: usize,
    /// Micro-batches in total (rounded up to whole checkpoint intervals).
    pub steps: usize,
    /// Micro-batches between checkpoints.
    pub checkpoint_every: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Peak learning rate of CLEX's ODE parameters (U and D) under the same schedule
    /// (`--clex-lr`; [`OdeLrGroups`]); `None`: `lr`, as the reference trains them in one group
    /// with the other weights. Only for models with a CLEX layer.
    pub clex_lr: Option<f64>,
    /// Warmup micro-batches.
    pub warmup: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Per-tensor gradient-norm clip (burn clips each parameter tensor separately).
    pub grad_clip: Option<f32>,
    /// Seed of weights, data order and CLEX draws.
    pub seed: u64,
    /// Continue from the newest complete checkpoint in `run_dir`.
    pub resume: bool,
    /// Validation windows of length L evaluated at each checkpoint and at the end (a
    /// quarter as many at 4L, so both cost the same tokens).
    pub valid_windows: usize,
    /// Data-parallel devices (GPUs of the backend; on the CPU, worker threads).
    pub devices: usize,
    /// Plain progress lines even in a terminal (the TUI is used otherwise).
    pub plain_progress: bool,
    /// Compute dtype of the train step (master weights and the ODE stay f32).
    pub precision: Precision,
    /// Fraction of the training windows that are synthetic passkey documents
    /// ([`clex_eval::passkey::PasskeyTask::training_window`]), added to the corpus's windows;
    /// 0 trains on the corpus alone. Validation stays on the corpus.
    pub passkey_fraction: f64,
    /// Mixture-of-experts models: add the router's load-balancing loss
    /// (`router_aux_loss_coef` of the config; [`StepSettings::router_aux_loss`]).
    pub router_aux_loss: bool,
}

impl TrainOptions {
    /// The defaults of `cargo xtask train`: the tiny CLEX preset on the bundled corpus.
    pub fn tiny(run_dir: PathBuf) -> Self {
        TrainOptions {
            run_dir,
            data: clex_eval::corpus::bundled_corpus_path(),
            tokenizer: None,
            vocab_size: 2048,
            preset: Preset::Tiny,
            init_from: None,
            rope: RopeChoice::Clex { max_factor: 8 },
            rope_theta: 10000.0,
            seq_len: 256,
            batch_size: 8,
            grad_accumulation: 1,
            steps: 400,
            checkpoint_every: 100,
            lr: 3e-3,
            clex_lr: None,
            warmup: 40,
            weight_decay: 0.0,
            grad_clip: Some(1.0),
            seed: 42,
            resume: false,
            valid_windows: 32,
            devices: 1,
            plain_progress: false,
            precision: Precision::F32,
            passkey_fraction: 0.0,
            router_aux_loss: false,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The HF directory of the final model.
    pub model_dir: PathBuf,
    /// Validation (sequence length, mean NLL, windows) at L, 2L, 4L.
    pub validation: Vec<(usize, f64, usize)>,
    /// Micro-batches run in this process.
    pub steps: usize,
    /// Wall time of this process, seconds.
    pub wall_s: f64,
    /// Tokens in the train and validation splits.
    pub tokens: (usize, usize),
    /// Training windows: from the corpus, and synthetic passkey ones added to them.
    pub windows: (usize, usize),
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[clex-train] {}", msg.as_ref());
}

/// Mean NLL of `model` over windows of `len + 1` tokens (inference semantics).
pub fn evaluate<B: ClexBackend>(model: &ClexLm<B>, windows: &[Vec<u32>], batch_size: usize) -> Option<f64> {
    if windows.is_empty() {
        return None;
    }
    let device = model.lm.embed.weight.val().device();
    let mut total = 0.0;
    let mut n = 0usize;
    for chunk in windows.chunks(batch_size) {
        let items = chunk.iter().enumerate().map(|(i, t)| crate::batch::LmItem { index: i, tokens: t.clone() }).collect();
        let batch: LmBatch<B> = burn::data::dataloader::batcher::Batcher::batch(&LmBatcher { seed: 0 }, items, &device);
        let loss: f64 = model.eval_loss(&batch).into_scalar().elem();
        total += loss * chunk.len() as f64;
        n += chunk.len();
    }
    Some(total / n as f64)
}

/// Runs training as configured.
#[allow(clippy::clone_on_copy)] // the CPU device is Copy, GPU backends' devices are not
pub fn train(opts: &TrainOptions) -> Result<TrainReport, TrainError> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.run_dir).map_err(io(&opts.run_dir))?;
    if opts.checkpoint_every == 0 || opts.batch_size == 0 || opts.seq_len < 2 || opts.devices == 0 {
        return Err(TrainError::NotEnoughData("checkpoint_every, batch_size, devices must be >= 1 and seq_len >= 2".into()));
    }
    // Held to the end of the run; the OS releases it however the process ends.
    let _lock = RunLock::acquire(&opts.run_dir)?;
    if !opts.batch_size.is_multiple_of(opts.devices) {
        return Err(TrainError::NotEnoughData(format!(
            "batch size {} does not split evenly over {} devices",
            opts.batch_size, opts.devices
        )));
    }
    let devices = backend::devices(opts.devices)?;
    let device = devices[0].clone();
    <Training as Backend>::seed(&device, opts.seed);

    let docs = read_documents(&opts.data)?;
    let (train_docs, valid_docs) = split_documents(docs);
    if train_docs.is_empty() {
        return Err(TrainError::NotEnoughData(format!("{}: no training documents", opts.data.display())));
    }
    let tok_path = opts.run_dir.join("tokenizer.json");
    let tokenizer = match (&opts.tokenizer, opts.resume && tok_path.exists()) {
        (Some(p), _) => {
            let t = load_tokenizer(p)?;
            let bytes = std::fs::read(p).map_err(io(p))?;
            write_durable(&tok_path, &bytes).map_err(|(f, e)| TrainError::Io { path: f, source: e })?;
            t
        }
        (None, true) => load_tokenizer(&tok_path)?,
        (None, false) => {
            log(format!("training a byte-level BPE ({} entries) on {} documents", opts.vocab_size, train_docs.len()));
            let texts: Vec<&str> = train_docs.iter().map(|d| d.text.as_str()).collect();
            let t = train_bpe(&texts, opts.vocab_size)?;
            // A resume reads it back: written atomically, never half.
            let json = t.to_string(false).map_err(|e| TrainError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
            write_durable(&tok_path, json.as_bytes()).map_err(|(f, e)| TrainError::Io { path: f, source: e })?;
            t
        }
    };
    log(format!("tokenizer ready ({:.1} s)", t0.elapsed().as_secs_f64()));
    let bos = boundary_id(&tokenizer);
    let enc = |docs: &[clex_eval::corpus::Document]| -> Result<Vec<Vec<u32>>, TrainError> {
        docs.iter().map(|d| encode(&tokenizer, &d.text)).collect()
    };
    let (train_tok, valid_tok) = (enc(&train_docs)?, enc(&valid_docs)?);
    let count = |d: &[Vec<u32>]| d.iter().map(Vec::len).sum::<usize>();
    let tokens = (count(&train_tok), count(&valid_tok));
    let l = opts.seq_len;
    let mut train_windows = pack(&train_tok, bos, l);
    let corpus_windows = train_windows.len();
    let passkey_windows = add_passkey_windows(&mut train_windows, opts, &tokenizer, bos)?;
    if train_windows.len() < opts.batch_size {
        return Err(TrainError::NotEnoughData(format!(
            "{} training windows of {l} tokens; need at least the batch size {}",
            train_windows.len(),
            opts.batch_size
        )));
    }
    let valid_at =
        |len: usize| -> Vec<Vec<u32>> { pack(&valid_tok, bos, len).into_iter().take((opts.valid_windows * l / len).max(1)).collect() };
    log(format!(
        "{} train tokens, {} validation tokens, {} training windows of {l}, {passkey_windows} of them passkey ({:.1} s)",
        tokens.0,
        tokens.1,
        train_windows.len(),
        t0.elapsed().as_secs_f64()
    ));

    let lm = build_model(opts, tokenizer.get_vocab_size(true), bos, &device)?;
    let optim = OdeLrGroups::new(optimizer(opts), ode_lr_ratio(opts)?);
    if let Some(ratio) = optim.ratio() {
        log(format!("CLEX's ODE (U, D) at peak learning rate {:e} ({ratio:.4} x --lr {:e})", opts.lr * ratio, opts.lr));
    }
    let epochs = opts.steps.div_ceil(opts.checkpoint_every);
    let scheduler = WarmupCosine { peak: opts.lr, min_ratio: 0.1, warmup: opts.warmup, total: epochs * opts.checkpoint_every, step: 0 };
    let resume_from = if opts.resume { latest_checkpoint(&opts.run_dir) } else { None };
    if opts.resume {
        match resume_from {
            Some(e) => {
                verify_checkpoint(&opts.run_dir, e)?;
                log(format!("resuming after checkpoint {e} (step {})", e * opts.checkpoint_every))
            }
            None => log("no complete checkpoint to resume from; starting fresh"),
        }
    }
    let first_epoch = resume_from.unwrap_or(0);
    // A crash may have left later epochs' files (complete or not) and temporary files; this
    // run rewrites those epochs and must not resume from a mix of old and new files.
    let discarded = discard_after(&opts.run_dir, first_epoch)?;
    if discarded > 0 {
        log(format!("removed {discarded} checkpoint files after checkpoint {first_epoch} (left by an earlier or crashed run)"));
    }
    let train_loader = Arc::new(StepLoader::<Training>::new(
        train_windows,
        opts.batch_size,
        opts.checkpoint_every,
        opts.seed,
        first_epoch,
        device.clone(),
    ));
    // One validation pass per checkpoint covers L and 4L; each batch holds one length.
    let valid_groups = BatchGroups::new(&[valid_at(l), valid_at(4 * l)], opts.batch_size);
    let valid_loader = DataLoaderBuilder::new(LmBatcher { seed: opts.seed }).batch_size(1).build(valid_groups);
    let recorder = AtomicRecorder::default();
    let mut training = SupervisedTraining::new(&opts.run_dir, train_loader, valid_loader)
        .metric_train_numeric(LossMetric::new())
        .metric_train_numeric(LmMetric::perplexity(None))
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(LmMetric::tokens_per_second())
        // burn's own loss (over both lengths) keeps its default "best checkpoint" rule working.
        .metric_valid_numeric(LossMetric::new())
        .metric_valid_numeric(LmMetric::loss(Some(l)))
        .metric_valid_numeric(LmMetric::perplexity(Some(l)))
        .metric_valid_numeric(LmMetric::loss(Some(4 * l)))
        .metric_valid_numeric(LmMetric::perplexity(Some(4 * l)))
        .with_file_checkpointer(recorder.clone())
        .num_epochs(epochs)
        .summary();
    if lm.clex_layer.is_some() {
        training = training.metric_train_numeric(LmMetric::scaling_factor());
    }
    if opts.plain_progress || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        training = training.renderer(PlainRenderer::new(10, opts.checkpoint_every, opts.devices));
    }
    if opts.devices > 1 {
        log(format!("data parallel over {} devices: {devices:?}", devices.len()));
    }
    let (model, mut training) = learner_setup(lm, training, opts, devices);
    if let Some(e) = resume_from {
        training = training.checkpoint(e);
    }
    let metrics = opts.run_dir.join("metrics.csv");
    let monitor = StepMonitor::new(training.interrupter(), &metrics, first_epoch * opts.checkpoint_every).map_err(io(&metrics))?;
    let model = model.with_monitor(monitor.clone());
    let result = training.launch(Learner::new(model, optim, scheduler));
    // launch returns after burn-train's checkpoint threads have finished.
    if let Some((epoch, message)) = recorder.failure() {
        let kept = match latest_checkpoint(&opts.run_dir) {
            Some(e) => format!("checkpoint {e} is intact: free space, then resume with --resume"),
            None => "no checkpoint was completed before it: free space and start again".into(),
        };
        return Err(TrainError::CheckpointWrite { epoch, message, kept });
    }
    if let Some((step, loss)) = monitor.non_finite() {
        let checkpoint =
            latest_checkpoint(&opts.run_dir).map(|e| format!("checkpoint {e}, resume with --resume")).unwrap_or_else(|| "none yet".into());
        return Err(TrainError::NonFinite { step, loss, checkpoint });
    }
    let model: ClexLm<Inference> = result.model;
    write_plot(&opts.run_dir, &metrics, opts.checkpoint_every, l)?;

    let model_dir = opts.run_dir.join("model");
    save_model(&model.lm, &model_dir)?;
    std::fs::copy(&tok_path, model_dir.join("tokenizer.json")).map_err(io(&model_dir))?;
    let mut validation = Vec::new();
    for len in [l, 2 * l, 4 * l] {
        let w = valid_at(len);
        if let Some(nll) = evaluate(&model, &w, opts.batch_size) {
            validation.push((len, nll, w.len()));
        }
    }
    write_summary(&opts.run_dir, &validation)?;
    Ok(TrainReport {
        model_dir,
        validation,
        steps: (epochs - first_epoch) * opts.checkpoint_every,
        wall_s: t0.elapsed().as_secs_f64(),
        tokens,
        windows: (corpus_windows, passkey_windows),
    })
}

/// Adds synthetic passkey windows of `seq_len + 1` tokens to the corpus's `windows`, so that
/// `passkey_fraction` of all windows are passkey ones; deterministic in the seed. Returns how
/// many were added.
fn add_passkey_windows(
    windows: &mut Vec<Vec<u32>>,
    opts: &TrainOptions,
    tokenizer: &tokenizers::Tokenizer,
    bos: Option<u32>,
) -> Result<usize, TrainError> {
    let f = opts.passkey_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(TrainError::NotEnoughData(format!("passkey fraction {f}: must be in [0, 1)")));
    }
    if f == 0.0 {
        return Ok(0);
    }
    let n = (windows.len() as f64 * f / (1.0 - f)).round() as usize;
    let task = clex_eval::passkey::PasskeyTask::new(tokenizer, bos).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    // Its own stream: the corpus's order and CLEX's draws stay those of the seed.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7061_7373_6b65_7900);
    for _ in 0..n {
        let w = task.training_window(opts.seq_len + 1, &mut rng).map_err(|e| TrainError::NotEnoughData(e.to_string()))?;
        windows.push(w);
    }
    Ok(n)
}

/// The run's optimizer: AdamW (β₂ 0.95, ε 1e-8) with the options' decoupled weight decay
/// and per-tensor gradient-norm clip.
pub fn optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(opts: &TrainOptions) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(opts.weight_decay)
        .with_grad_clipping(opts.grad_clip.map(GradientClippingConfig::Norm))
        .init()
}

/// Wraps `lm` for training and sets up what data parallelism and gradient accumulation rest
/// on: the step's settings (each micro-batch's loss is weighted by its share of the step
/// over the micro-batches per step), the multi-device strategy (the devices' gradients are
/// summed on the first before the optimizer) and burn-train's accumulation. `devices` are
/// the `opts.devices` devices to run on. Public for the gradient tests
/// (`clex-train/tests/gradients.rs`), which run it with an optimizer that records what it is
/// handed, so they check this wiring rather than a copy of it.
#[doc(hidden)]
pub fn learner_setup<LC: LearningComponentsTypes>(
    lm: CausalLm<LC::Backend>,
    mut training: SupervisedTraining<LC>,
    opts: &TrainOptions,
    devices: Vec<Device<LC::Backend>>,
) -> (ClexLm<LC::Backend>, SupervisedTraining<LC>) {
    let settings = StepSettings {
        grad_accumulation: opts.grad_accumulation.max(1),
        precision: opts.precision,
        router_aux_loss: opts.router_aux_loss,
        ..StepSettings::default()
    };
    if devices.len() > 1 {
        training = training.with_training_strategy(ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice).into());
    }
    if opts.grad_accumulation > 1 {
        training = training.grads_accumulation(opts.grad_accumulation);
    }
    (ClexLm::new(lm, settings), training)
}

fn build_model(
    opts: &TrainOptions,
    vocab: usize,
    bos: Option<u32>,
    device: &burn::tensor::Device<Training>,
) -> Result<CausalLm<Training>, TrainError> {
    let lm = match &opts.init_from {
        Some(dir) => {
            // A CLEX checkpoint continues with its own layer; any other model continues under
            // the run's rope (a fresh CLEX layer, or a baseline's scaling).
            let source = ModelSource::open(dir)?;
            let config = match (&opts.rope, source.config().is_clex()) {
                (RopeChoice::Clex { .. }, true) => source.config().clone(),
                (rope, _) => source.config().with_rope(&rope.change(), None)?,
            };
            source.load_with::<Training>(config, device, DType::F32)?
        }
        None => {
            let raw = preset_config(opts.preset, vocab, &opts.rope, opts.rope_theta, bos);
            let cfg = ModelConfig::from_json(raw, Path::new("<preset>"))?;
            init_model(cfg, device, opts.seed)
        }
    };
    // A learning rate for parameters the model does not have is a mistake, not a no-op.
    if let (Some(clex_lr), None) = (opts.clex_lr, &lm.clex_layer) {
        return Err(TrainError::NotEnoughData(format!(
            "--clex-lr {clex_lr}: the model has no CLEX layer (rope {:?}); the ODE's learning rate applies to CLEX models only",
            opts.rope
        )));
    }
    Ok(lm)
}

fn write_summary(run_dir: &Path, validation: &[(usize, f64, usize)]) -> Result<(), TrainError> {
    let mut csv = String::from("length,windows,mean_nll,perplexity\n");
    for (len, nll, n) in validation {
        csv.push_str(&format!("{len},{n},{nll:.6},{:.4}\n", nll.exp()));
    }
    let path = run_dir.join("validation.csv");
    clex_models::write_atomic(&path, csv.as_bytes())?;
    Ok(())
}

/// `loss.svg` from `metrics.csv` and burn-train's per-epoch validation logs at L and 4L.
fn write_plot(run_dir: &Path, metrics: &Path, interval: usize, l: usize) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(metrics).map_err(io(metrics))?;
    let train: Vec<(usize, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    let mut valid = Vec::new();
    for len in [l, 4 * l] {
        let mut points = Vec::new();
        for epoch in 1.. {
            let path = run_dir.join(format!("valid/epoch-{epoch}/Loss_at_{len}.log"));
            let Ok(log) = std::fs::read_to_string(path) else { break };
            // burn-train logs "value,count" per batch; batches of the other length have count 0.
            let (sum, n) = log
                .lines()
                .filter_map(|line| {
                    let (v, c) = line.split_once(',')?;
                    Some((v.parse::<f64>().ok()?, c.parse::<f64>().ok()?))
                })
                .fold((0.0, 0.0), |(s, n), (v, c)| (s + v * c, n + c));
            if n > 0.0 {
                points.push((epoch * interval, sum / n));
            }
        }
        valid.push((format!("validation loss at {len}"), points));
    }
    // The title names the run (its directory's name), not where it lies.
    let run_name = run_dir.file_name().map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let svg = clex_eval::plot::loss_svg(&train, &valid, &run_name)?;
    clex_models::write_atomic(&run_dir.join("loss.svg"), svg.as_bytes())?;
    Ok(())
}
