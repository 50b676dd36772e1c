//! One measured configuration in its own process (`xtask bench-worker`, hidden), so that
//! its peak resident memory (VmHWM) is its own. It prints one `BENCH_RESULT {json}` line.
//!
//! The inference protocol, mirrored step for step by `bench/torch_reference.py`:
//! 1. warm-up: a 16-token prefill and 2 decode steps on a throwaway cache;
//! 2. prefill: a fresh cache, one forward over the first P ids, timed; 3 times, median;
//! 3. decode ladder on one fresh cache: for each context c (P, 2P, 4P, 8P), an untimed
//!    forward of the ids up to c − n, then n single-token steps, each timed, ending at c;
//!    then one more timed step from c to c + 1 (for CLEX the t boundary: ceil((c+1)/P) >
//!    c/P, so every cached key is re-rotated in it).
//!
//! The long-context protocol (`--task long`, `long-pair`), mirrored by `bench/torch_long.py`:
//! the same warm-up; then one fresh session, a prefill of the first `--contexts` ids (one
//! context, all in one call: the session chunks it as it does for any caller), timed; then
//! `--steps` greedy decode steps (argmax of the last logits fed back), each timed.
//!
//! Every forward runs through a [`Session`] and reads its last row of logits back to the
//! host, as generation must.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion};
use burn::train::TrainStep;
use clex_models::backend::{self, Inference, Training};
use clex_models::session::token_tensor;
use clex_models::{CachePolicy, CausalLm, ModelSource, Session};
use clex_train::batch::LmBatch;
use clex_train::step::{ClexLm, StepSettings};
use serde::Serialize;

use super::machine::peak_rss_bytes;
use super::results::{DecodePoint, InferResult, LongResult, TrainResult, median_of};

/// What one worker process measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The inference protocol on `--model`.
    Infer,
    /// The inference protocol on `--model` and its CLEX twin, in lockstep.
    Pair,
    /// Training steps of `--model`.
    Train,
    /// Training steps of `--model` and its CLEX twin, in lockstep.
    TrainPair,
    /// The long-context protocol on `--model` at one context.
    Long,
    /// The long-context protocol on `--model` and its fresh-CLEX twin (T_max
    /// `--clex-factor`), in lockstep.
    LongPair,
}

impl Task {
    /// The `--task` value that selects it.
    pub fn flag(self) -> String {
        use clap::ValueEnum as _;
        self.to_possible_value().expect("no task is skipped").get_name().to_owned()
    }
}

/// Flags of the hidden `xtask bench-worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// What to measure.
    #[arg(long, value_enum)]
    pub task: Task,
    /// HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// pair, train-pair: the CLEX checkpoint whose settings the lockstep twin of --model takes.
    #[arg(long)]
    pub other: Option<PathBuf>,
    /// JSON array of token ids.
    #[arg(long)]
    pub ids: PathBuf,
    /// Inference: prefill length (P).
    #[arg(long, default_value_t = 0)]
    pub prefill: usize,
    /// Inference: comma-separated contexts of the decode ladder.
    #[arg(long, value_delimiter = ',')]
    pub contexts: Vec<usize>,
    /// Inference: timed prefills (median reported).
    #[arg(long, default_value_t = 3)]
    pub prefill_reps: usize,
    /// Timed decode steps per context.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Training: sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Training: sequence length.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Training: untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// long-pair: T_max of the fresh CLEX layer the twin gets (P stays the model's).
    #[arg(long, default_value_t = 8)]
    pub clex_factor: usize,
    /// long-pair: run the CLEX twin first (the parent flips it on odd runs).
    #[arg(long)]
    pub flip: bool,
    /// long: the weights' dtype (f32, f16 or bf16).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Prints the result line the parent looks for.
fn emit<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("BENCH_RESULT {}", serde_json::to_string(v)?);
    Ok(())
}

/// `xtask bench-worker`.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args.ids).with_context(|| args.ids.display().to_string())?)?;
    match args.task {
        Task::Infer => emit(&infer(&args, &ids)?),
        Task::Pair => emit(&pair(&args, &ids)?),
        Task::TrainPair => emit(&train_pair(&args, &ids)?),
        Task::Train => emit(&train(&args, &ids)?),
        Task::Long => emit(&long(&args, &ids)?),
        Task::LongPair => emit(&long_pair(&args, &ids)?),
    }
}

/// A fresh session with the reference cache policy.
fn session(model: &CausalLm<Inference>) -> Session<'_, Inference> {
    Session::new(model, CachePolicy::Reference)
}

/// One forward through the session's cache, ending with the last logits row on the host.
fn forward(session: &mut Session<'_, Inference>, ids: &[u32]) -> anyhow::Result<()> {
    std::hint::black_box(session.prefill(ids)?);
    Ok(())
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// One forward through the session's cache, timed, ms.
fn timed(session: &mut Session<'_, Inference>, ids: &[u32]) -> anyhow::Result<f64> {
    let start = Instant::now();
    forward(session, ids)?;
    Ok(ms(start))
}

/// The model at `path` on `device`, f32.
fn load<B: Backend>(path: &std::path::Path, device: &B::Device) -> anyhow::Result<CausalLm<B>> {
    load_as::<B>(path, device, DType::F32)
}

fn load_as<B: Backend>(path: &std::path::Path, device: &B::Device, dtype: DType) -> anyhow::Result<CausalLm<B>> {
    Ok(ModelSource::open(path)?.load::<B>(device, dtype)?)
}

fn check_ids(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<()> {
    let need = args.contexts.iter().max().copied().unwrap_or(0).max(args.prefill) + 1;
    if ids.len() < need {
        bail!("{} holds {} ids, the ladder needs {need}", args.ids.display(), ids.len());
    }
    if args.contexts.windows(2).any(|w| w[1] <= w[0] + args.steps) || args.contexts.first().is_some_and(|&c| c < args.steps) {
        bail!("contexts must grow by more than --steps ({})", args.steps);
    }
    Ok(())
}

fn warm_up(model: &CausalLm<Inference>, ids: &[u32]) -> anyhow::Result<()> {
    let mut warm = session(model);
    forward(&mut warm, &ids[..16])?;
    for i in 16..18 {
        forward(&mut warm, &ids[i..i + 1])?;
    }
    Ok(())
}

fn result(
    engine: &str,
    model: &CausalLm<Inference>,
    prefill_tokens: usize,
    prefill_runs: Vec<f64>,
    decode: Vec<DecodePoint>,
    cache_bytes: usize,
) -> InferResult {
    let cfg = model.config();
    let embed = cfg.vocab_size * cfg.hidden_size;
    let params = model.num_params();
    let read = if cfg.tie_word_embeddings { params } else { params - embed + cfg.hidden_size };
    // A mixture of experts reads only the experts its token chose: k of E per layer.
    let unread = cfg
        .moe
        .as_ref()
        .map_or(0, |m| (m.num_experts - m.experts_per_token) * 3 * cfg.hidden_size * cfg.intermediate_size * cfg.num_layers);
    let read = read - unread;
    InferResult {
        engine: engine.into(),
        prefill_tokens,
        prefill_s: median_of(&prefill_runs),
        prefill_runs,
        decode,
        cache_bytes: Some(cache_bytes as u64),
        peak_rss_bytes: peak_rss_bytes(),
        params: params as u64,
        decode_weight_bytes: 4 * read as u64,
        versions: backend::name().into(),
    }
}

fn infer(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<InferResult> {
    check_ids(args, ids)?;
    let model = load::<Inference>(&args.model, &backend::device(None))?;
    warm_up(&model, ids)?;

    let prefill_runs = (0..args.prefill_reps.max(1))
        .map(|_| Ok(timed(&mut session(&model), &ids[..args.prefill])? / 1e3))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut decoding = session(&model);
    let mut len = 0;
    let mut decode = Vec::new();
    for &c in &args.contexts {
        let first = c - args.steps;
        if first > len {
            forward(&mut decoding, &ids[len..first])?;
        }
        let step_ms = (first..c).map(|i| timed(&mut decoding, &ids[i..i + 1])).collect::<anyhow::Result<Vec<_>>>()?;
        let next_ms = timed(&mut decoding, &ids[c..c + 1])?;
        decode.push(DecodePoint { context: c, step_ms, next_ms });
        len = c + 1;
    }
    Ok(result("clex-rs", &model, args.prefill, prefill_runs, decode, decoding.cache().memory_bytes()))
}

/// `--model` (plain RoPE) and its CLEX twin (the CLEX settings of `--other`, on the very same
/// weight tensors) through the same protocol in lockstep: each forward of one is followed by
/// the same forward of the other, in alternating order, so a burst of load from another
/// process hits both and the per-step time ratios stay meaningful on a shared machine.
fn pair(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<[InferResult; 2]> {
    check_ids(args, ids)?;
    let other = args.other.as_ref().context("--task pair needs --other")?;
    // The CLEX twin shares the plain model's weight tensors (a fresh CLEX layer on a clone of
    // its handles): two separately loaded copies of one checkpoint decode up to 5-7% apart
    // in one process, by where their weights landed in memory, which would swamp a 2% target.
    let plain = load::<Inference>(&args.model, &backend::device(None))?;
    let clex = clex_twin(&plain, other)?;
    let models = [plain, clex];
    for m in &models {
        warm_up(m, ids)?;
    }
    // Both timed, in alternating order; returns [ms of models[0], ms of models[1]].
    let both = |flip: bool, f: &mut dyn FnMut(usize) -> anyhow::Result<f64>| -> anyhow::Result<[f64; 2]> {
        let mut t = [0.0; 2];
        for k in if flip { [1, 0] } else { [0, 1] } {
            t[k] = f(k)?;
        }
        Ok(t)
    };

    let mut prefill = [Vec::new(), Vec::new()];
    for rep in 0..args.prefill_reps.max(1) {
        let t = both(rep % 2 == 1, &mut |k| timed(&mut session(&models[k]), &ids[..args.prefill]))?;
        for k in 0..2 {
            prefill[k].push(t[k] / 1e3);
        }
    }

    let mut sessions = [session(&models[0]), session(&models[1])];
    let mut len = 0;
    let mut decode: [Vec<DecodePoint>; 2] = [Vec::new(), Vec::new()];
    for &c in &args.contexts {
        let first = c - args.steps;
        if first > len {
            for s in &mut sessions {
                forward(s, &ids[len..first])?;
            }
        }
        let mut steps = [Vec::new(), Vec::new()];
        for i in first..c {
            let t = both(i % 2 == 1, &mut |k| timed(&mut sessions[k], &ids[i..i + 1]))?;
            steps[0].push(t[0]);
            steps[1].push(t[1]);
        }
        let next = both(false, &mut |k| timed(&mut sessions[k], &ids[c..c + 1]))?;
        for k in 0..2 {
            decode[k].push(DecodePoint { context: c, step_ms: std::mem::take(&mut steps[k]), next_ms: next[k] });
        }
        len = c + 1;
    }
    let ([d0, d1], [p0, p1]) = (decode, prefill);
    Ok([
        result("clex-rs", &models[0], args.prefill, p0, d0, sessions[0].cache().memory_bytes()),
        result("clex-rs", &models[1], args.prefill, p1, d1, sessions[1].cache().memory_bytes()),
    ])
}

/// `plain` with a fresh CLEX layer of `other`'s CLEX settings, on the very same weight tensors.
fn clex_twin<B: Backend>(plain: &CausalLm<B>, other: &std::path::Path) -> anyhow::Result<CausalLm<B>> {
    let clex_core::RopeScaling::Clex(params) = ModelSource::open(other)?.config().rope.scaling.clone() else {
        bail!("{} is not a CLEX model", other.display())
    };
    Ok(clex_models::attach_fresh_clex(plain.clone(), params)?)
}

/// The one context of a long-context task, checked against the ids.
fn long_context(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<usize> {
    let &[context] = args.contexts.as_slice() else { bail!("--task long and long-pair take one --contexts value") };
    if ids.len() < context.max(18) {
        bail!("{} holds {} ids, a prefill of {context} needs that many", args.ids.display(), ids.len());
    }
    Ok(context)
}

/// The index of the largest logit (the first of equals), as the greedy token.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A model part-way through the long-context protocol: its session, the next greedy
/// token and what was timed so far.
struct LongRun<'m> {
    session: Session<'m, Inference>,
    next: u32,
    prefill_s: f64,
    step_ms: Vec<f64>,
    generated: Vec<u32>,
}

impl<'m> LongRun<'m> {
    /// A fresh session and the timed prefill of `prompt`.
    fn prefill(model: &'m CausalLm<Inference>, prompt: &[u32]) -> anyhow::Result<Self> {
        let mut session = session(model);
        let start = Instant::now();
        let logits = session.prefill(prompt)?;
        let prefill_s = start.elapsed().as_secs_f64();
        let next = argmax(&logits);
        Ok(LongRun { session, next, prefill_s, step_ms: Vec::new(), generated: Vec::new() })
    }

    /// One greedy step, timed (the argmax is not).
    fn step(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        let logits = std::hint::black_box(self.session.step(self.next)?);
        self.step_ms.push(ms(start));
        self.generated.push(self.next);
        self.next = argmax(&logits);
        Ok(())
    }

    fn result(self, engine: &str, model: &CausalLm<Inference>, context: usize) -> LongResult {
        let r = result(engine, model, context, vec![self.prefill_s], Vec::new(), self.session.cache().memory_bytes());
        LongResult {
            engine: engine.into(),
            context,
            prefill_s: self.prefill_s,
            step_ms: self.step_ms,
            generated: self.generated,
            cache_bytes: r.cache_bytes,
            peak_rss_bytes: r.peak_rss_bytes,
            params: r.params,
            decode_weight_bytes: r.decode_weight_bytes,
            versions: r.versions,
        }
    }
}

fn long(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<LongResult> {
    let context = long_context(args, ids)?;
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => anyhow::bail!("--dtype {other}: accepted values: f32, f16, bf16"),
    };
    let model = load_as::<Inference>(&args.model, &backend::device(None), dtype)?;
    warm_up(&model, ids)?;
    let mut run = LongRun::prefill(&model, &ids[..context])?;
    for _ in 0..args.steps {
        run.step()?;
    }
    Ok(run.result("clex-rs", &model, context))
}

/// `--model` (plain RoPE) and the same weight tensors with a fresh CLEX layer (T_max
/// `--clex-factor`, P the model's: what `--rope-scaling clex` gives), through the
/// long-context protocol in lockstep: the two prefills back to back, then step by step in
/// alternating order. Returns [plain, CLEX].
fn long_pair(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<[LongResult; 2]> {
    let context = long_context(args, ids)?;
    let plain = load::<Inference>(&args.model, &backend::device(None))?;
    let clex = clex_models::attach_fresh_clex(plain.clone(), clex_core::ClexParams::fresh(args.clex_factor))?;
    let models = [plain, clex];
    for m in &models {
        warm_up(m, ids)?;
    }
    let order = |flip: bool| if flip { [1, 0] } else { [0, 1] };
    let mut runs: [Option<LongRun<'_>>; 2] = [None, None];
    for k in order(args.flip) {
        runs[k] = Some(LongRun::prefill(&models[k], &ids[..context])?);
    }
    let [Some(mut a), Some(mut b)] = runs else { unreachable!("both prefilled") };
    for i in 0..args.steps {
        if (i % 2 == 1) != args.flip {
            b.step()?;
            a.step()?;
        } else {
            a.step()?;
            b.step()?;
        }
    }
    Ok([a.result("clex-rs", &models[0], context), b.result("clex-rs CLEX", &models[1], context)])
}

/// One model under training: the step of clex-train (forward, loss, backward) and AdamW.
struct Trainer {
    lm: Option<ClexLm<Training>>,
    optim: burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, ClexLm<Training>, Training>,
    step_s: Vec<f64>,
    t: Vec<usize>,
}

impl Trainer {
    fn new(model: CausalLm<Training>) -> Self {
        Trainer {
            lm: Some(ClexLm::new(model, StepSettings::default())),
            optim: AdamWConfig::new().init(),
            step_s: Vec::new(),
            t: Vec::new(),
        }
    }

    /// One step on `batch`, timed (kept unless it is a warm-up step).
    fn step(&mut self, batch: LmBatch<Training>, keep: bool) -> anyhow::Result<()> {
        let lm = self.lm.take().expect("a model between steps");
        let start = Instant::now();
        let out = TrainStep::step(&lm, batch);
        let lm = self.optim.step(1e-4, lm, out.grads);
        let loss: f32 = out.item.loss.into_scalar().elem();
        let secs = start.elapsed().as_secs_f64();
        self.lm = Some(lm);
        if !loss.is_finite() {
            bail!("training loss is {loss}");
        }
        if keep {
            self.step_s.push(secs);
            self.t.extend(out.item.t);
        }
        Ok(())
    }

    fn result(self, tokens_per_step: usize) -> TrainResult {
        TrainResult { tokens_per_step, step_s: self.step_s, t: self.t, peak_rss_bytes: peak_rss_bytes() }
    }
}

/// The batch of step `step`: the same windows every step; the key (hence CLEX's t and
/// positions) changes.
fn train_batch(args: &WorkerArgs, ids: &[u32], step: usize) -> anyhow::Result<LmBatch<Training>> {
    let device = backend::device(None);
    let (rows, len) = (args.batch, args.seq_len);
    let tokens = rows * (len + 1);
    if ids.len() < tokens {
        bail!("{} holds {} ids, a batch needs {tokens}", args.ids.display(), ids.len());
    }
    let windows: Vec<&[u32]> = ids[..tokens].chunks(len + 1).collect();
    let inputs: Vec<u32> = windows.iter().flat_map(|w| w[..len].iter().copied()).collect();
    let targets: Vec<u32> = windows.iter().flat_map(|w| w[1..].iter().copied()).collect();
    Ok(LmBatch {
        inputs: token_tensor::<Training>(&inputs, &device).reshape([rows, len]),
        targets: token_tensor::<Training>(&targets, &device).reshape([rows, len]),
        key: 1000 + step as u64,
        step,
        share: 1.0,
    })
}

fn train(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<TrainResult> {
    let mut trainer = Trainer::new(load::<Training>(&args.model, &backend::device(None))?);
    for step in 0..args.warmup + args.steps {
        trainer.step(train_batch(args, ids, step)?, step >= args.warmup)?;
    }
    Ok(trainer.result(args.batch * args.seq_len))
}

/// Training steps of `--model` (plain RoPE) and its CLEX twin (the settings of `--other`,
/// starting from the same weight tensors) in lockstep, alternating which goes first; the
/// same batches and keys for both.
fn train_pair(args: &WorkerArgs, ids: &[u32]) -> anyhow::Result<[TrainResult; 2]> {
    let other = args.other.as_ref().context("--task train-pair needs --other")?;
    let plain = load::<Training>(&args.model, &backend::device(None))?;
    let clex = clex_twin(&plain, other)?;
    let mut trainers = [Trainer::new(plain), Trainer::new(clex)];
    for step in 0..args.warmup + args.steps {
        let batch = train_batch(args, ids, step)?;
        let order = if step % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            trainers[k].step(batch.clone(), step >= args.warmup)?;
        }
    }
    let [a, b] = trainers;
    Ok([a.result(args.batch * args.seq_len), b.result(args.batch * args.seq_len)])
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::Task;

    /// The parent passes `Task::flag`; the worker's clap must read each back as the same task.
    #[test]
    fn task_flags_parse_back() {
        for &task in Task::value_variants() {
            assert_eq!(Task::from_str(&task.flag(), false), Ok(task));
        }
        assert_eq!(Task::TrainPair.flag(), "train-pair");
    }
}
