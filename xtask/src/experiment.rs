//! `cargo xtask experiment`: CLEX's length-extrapolation result at small scale, with
//! baselines, in two regimes. Stage 1 pretrains a tiny LLaMA with plain RoPE at P. Stage 2
//! continues it under plain RoPE, PI, YaRN and CLEX (same data, steps and seed) at L = P
//! (the short regime) and at L = 4P (the long regime, as the released CLEX-16K was trained:
//! s = L/P = 4, so t ≤ 4 trains on dense positions), where CLEX also runs with a lower
//! learning rate for its ODE. Synthetic passkey documents are mixed into both stages, and
//! stage 1 ends with a retrieval phase at P where half the windows are passkey documents, so
//! the models learn to retrieve within L before stage 2 changes their positions. Every model,
//! and dynamic NTK on the stage-1 weights, is scored at P..32P on the same validation windows
//! and on passkey retrieval at 1x..16x its L; the report (markdown, SVGs, JSON) is written
//! from those numbers.

mod cache;
mod report;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use clex_eval::corpus::{bundled_corpus_path, read_documents, split_documents};
use clex_eval::eval::{EvalSet, Tally, score_windows, score_windows_by_position};
use clex_eval::passkey::{Cell, PasskeyTask};
use clex_models::CausalLm;
use clex_models::backend::{self, Inference};
use clex_train::preset::load_for_eval;
use clex_train::preset::{Preset, RopeChoice};
use clex_train::tokenizer::{boundary_id, encode, load_tokenizer};
use clex_train::trainer::TrainOptions;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use report::{Evaluated, Point, Report};
use stages::{RETRIEVAL, STAGE1, StageOutcome, run_stage};

/// Flags of `cargo xtask experiment`.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// Smoke test (a few minutes, lengths up to 8L, tiny step counts; the numbers mean
    /// nothing). Writes to runs/experiment-quick unless --out-dir / --out are given.
    #[arg(long)]
    quick: bool,
    /// Rebuild and run with this backend: flex | wgpu | tch.
    #[arg(long)]
    backend: Option<String>,
    /// Directory of the training runs [default: runs/experiment, or runs/experiment-quick].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Directory of the report: EXTRAPOLATION.md, extrapolation.svg, extrapolation.json
    /// [default: docs/, or the run directory with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which stage-2 regimes to train and evaluate: short (L = P), long (L = 4P) or both.
    #[arg(long, value_enum, default_value_t = Regime::Both)]
    regime: Regime,
    /// Train every stage again, even when a finished stage with the same settings exists.
    #[arg(long)]
    fresh: bool,
    /// Micro-batches of stage 1 (overrides the mode's default).
    #[arg(long)]
    stage1_steps: Option<usize>,
    /// Micro-batches of stage 1's retrieval phase (overrides the mode's default).
    #[arg(long)]
    retrieval_steps: Option<usize>,
    /// Micro-batches of each stage-2 run (overrides the mode's default).
    #[arg(long)]
    stage2_steps: Option<usize>,
    /// Evaluation regions of the longest length each (the token budget per length;
    /// overrides the mode's default).
    #[arg(long)]
    regions: Option<usize>,
}

/// The stage-2 training regimes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// L = P.
    Short,
    /// L = 4P.
    Long,
    /// Both.
    Both,
}

impl Regime {
    fn short(self) -> bool {
        self != Regime::Long
    }

    fn long(self) -> bool {
        self != Regime::Short
    }
}

/// Every number the experiment is run with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Smoke-test mode.
    pub quick: bool,
    /// Training length L (= P of the tiny preset).
    pub seq_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches of stage 1 and of each stage-2 run.
    pub steps: (usize, usize),
    /// Peak learning rates of stage 1 and stage 2 (stage 1's retrieval phase uses stage 2's).
    pub lr: (f64, f64),
    /// Seeds of stage 1 and stage 2 (stage 2 draws fresh batches, not stage 1's first ones).
    pub seed: (u64, u64),
    /// Micro-batches of stage 1's retrieval phase (plain RoPE at P, from the stage-1 weights).
    pub retrieval_steps: usize,
    /// Seed of the retrieval phase.
    pub retrieval_seed: u64,
    /// CLEX T_max.
    pub max_factor: usize,
    /// PI (linear) factor.
    pub pi_factor: f64,
    /// YaRN factor.
    pub yarn_factor: f64,
    /// Dynamic NTK factor (2: CLEX's step-0 trajectory, see the report).
    pub ntk_factor: f64,
    /// Evaluation lengths as multiples of L.
    pub multiples: Vec<usize>,
    /// Evaluation regions of the longest length.
    pub regions: usize,
    /// Tokens per evaluation forward.
    pub batch_tokens: usize,
    /// The stage-2 regimes run.
    pub regime: Regime,
    /// The long regime's training length as a multiple of P.
    pub long_multiple: usize,
    /// YaRN factor of the long regime.
    pub long_yarn_factor: f64,
    /// The long regime's second CLEX run: its ODE's learning rate relative to the model's.
    pub clex_lr_ratio: f64,
    /// Fraction of training windows that are synthetic passkey documents: in stage 1, and
    /// in its retrieval phase and stage 2.
    pub passkey_fraction: (f64, f64),
    /// Passkey prompt lengths as multiples of P (each model up to 16x its training length).
    pub passkey_multiples: Vec<usize>,
    /// Needle depths of the passkey evaluation.
    pub passkey_depths: Vec<f64>,
    /// Passkey trials per length and depth.
    pub passkey_trials: usize,
    /// The documents (the bundled corpus, or the quick mode's slice of it).
    pub data: PathBuf,
}

impl Settings {
    fn new(args: &ExperimentArgs) -> Self {
        // Full mode, both regimes, on 2 CPU cores (2026-12-01): stage 1 21 min (0.32 s per step
        // of 8 × 128 on 2 threads), the retrieval phase 12 min, then the regimes side by side
        // on 1 thread each (short: 4 runs of 4-7 min, evaluation 5 min; long: 5 runs of 6-11
        // min at 2 × 512, evaluation 20 min, mostly passkey prompts up to 8192 tokens): about
        // 1 h 35 min; quick: 2 min 16 s.
        let (steps, retrieval_steps, multiples, regions) =
            if args.quick { ((60, 15), 15, vec![1, 2, 4, 8], 2) } else { ((4000, 800), 2400, vec![1, 2, 4, 8, 16, 32], 8) };
        let (passkey_multiples, passkey_depths, passkey_trials) =
            if args.quick { (vec![1, 4, 16], vec![0.5], 1) } else { (vec![1, 2, 4, 8, 16, 32, 64], vec![0.0, 0.25, 0.5, 0.75, 1.0], 4) };
        Settings {
            quick: args.quick,
            seq_len: Preset::Tiny.max_position_embeddings(),
            batch_size: 8,
            steps: (args.stage1_steps.unwrap_or(steps.0), args.stage2_steps.unwrap_or(steps.1)),
            lr: (3e-3, 1e-3),
            seed: (42, 43),
            retrieval_steps: args.retrieval_steps.unwrap_or(retrieval_steps),
            retrieval_seed: 44,
            max_factor: 16,
            pi_factor: 4.0,
            yarn_factor: 8.0,
            ntk_factor: 2.0,
            multiples,
            regions: args.regions.unwrap_or(regions),
            batch_tokens: 4096,
            regime: args.regime,
            long_multiple: 4,
            long_yarn_factor: 16.0,
            clex_lr_ratio: 0.1,
            // At 0.1 no model learned to retrieve (0/20 at its own L, 2026-12-01); probes from the
            // stage-1 weights at 0.5: 2400 micro-batches at P retrieve 95% at P, and 800 more at
            // 4P keep 95% at 4P, where 800 at 4P straight from stage 1 retrieve none.
            passkey_fraction: (0.1, 0.5),
            passkey_multiples,
            passkey_depths,
            passkey_trials,
            data: bundled_corpus_path(),
        }
    }

    fn lengths(&self) -> Vec<usize> {
        self.multiples.iter().map(|m| m * self.seq_len).collect()
    }
}

/// A stage-2 run.
#[derive(Debug, Clone)]
pub struct Stage2Run {
    /// Directory under the run directory.
    pub dir: &'static str,
    /// Method key of the model it makes.
    pub key: &'static str,
    /// The rope it trains under.
    pub rope: RopeChoice,
    /// Training length as a multiple of P.
    pub multiple: usize,
    /// The ODE's learning rate relative to the model's (None: the same, one group).
    pub clex_lr_ratio: Option<f64>,
}

/// The stage-2 runs of the chosen regimes, in training order.
fn stage2_runs(s: &Settings) -> Vec<Stage2Run> {
    let run = |dir, key, rope, multiple, clex_lr_ratio| Stage2Run { dir, key, rope, multiple, clex_lr_ratio };
    let clex = RopeChoice::Clex { max_factor: s.max_factor };
    let m = s.long_multiple;
    let mut runs = Vec::new();
    if s.regime.short() {
        runs.push(run("stage2-rope", "rope", RopeChoice::None, 1, None));
        runs.push(run("stage2-pi", "pi", RopeChoice::Linear(s.pi_factor), 1, None));
        runs.push(run("stage2-yarn", "yarn", RopeChoice::Yarn(s.yarn_factor), 1, None));
        runs.push(run("stage2-clex", "clex", clex.clone(), 1, None));
    }
    if s.regime.long() {
        runs.push(run("stage2-rope-4P", "rope-4P", RopeChoice::None, m, None));
        runs.push(run("stage2-pi-4P", "pi-4P", RopeChoice::Linear(s.pi_factor), m, None));
        runs.push(run("stage2-yarn-4P", "yarn-4P", RopeChoice::Yarn(s.long_yarn_factor), m, None));
        runs.push(run("stage2-clex-4P", "clex-4P", clex.clone(), m, None));
        runs.push(run("stage2-clex-4P-lr", "clex-4P-lr", clex, m, Some(s.clex_lr_ratio)));
    }
    runs
}

/// A training stage of the experiment.
enum Stage<'a> {
    /// Stage 1: plain RoPE from scratch at P.
    Pretrain,
    /// Stage 1's retrieval phase: plain RoPE at P from the stage-1 model in `from`.
    Retrieval { from: &'a Path },
    /// A stage-2 run from the model in `from`.
    Continue { from: &'a Path, run: &'a Stage2Run },
}

/// Training options of `stage`, written to `dir`.
fn options(s: &Settings, dir: PathBuf, rope: RopeChoice, stage: Stage) -> TrainOptions {
    let mut o = TrainOptions::tiny(dir);
    o.data = s.data.clone();
    o.rope = rope;
    let multiple = if let Stage::Continue { run, .. } = stage { run.multiple } else { 1 };
    // Longer training windows keep the tokens per micro-batch (and the step count) equal.
    o.seq_len = s.seq_len * multiple;
    o.batch_size = (s.batch_size / multiple).max(1);
    let mut from = |dir: &Path| {
        o.init_from = Some(dir.join("model"));
        o.tokenizer = Some(dir.join("tokenizer.json"));
    };
    let (steps, lr, seed, passkey) = match stage {
        Stage::Pretrain => (s.steps.0, s.lr.0, s.seed.0, s.passkey_fraction.0),
        Stage::Retrieval { from: dir } => {
            from(dir);
            (s.retrieval_steps, s.lr.1, s.retrieval_seed, s.passkey_fraction.1)
        }
        Stage::Continue { from: dir, run } => {
            from(dir);
            o.clex_lr = run.clex_lr_ratio.map(|r| r * s.lr.1);
            (s.steps.1, s.lr.1, s.seed.1, s.passkey_fraction.1)
        }
    };
    o.passkey_fraction = passkey;
    o.steps = steps.max(1);
    o.lr = lr;
    o.seed = seed;
    o.warmup = (o.steps / 20).max(1);
    // Four checkpoints make an interrupted full run resumable; quick runs skip them.
    o.checkpoint_every = if s.quick { o.steps } else { o.steps.div_ceil(4) };
    o.valid_windows = 8; // the trainer's own validation; the experiment evaluates separately
    o.plain_progress = true;
    o
}

/// The quick mode's corpus: every validation document and every 8th train document of the
/// bundled corpus (ids kept, so the split is the same), which cuts each stage's tokenizing.
fn quick_corpus(out_dir: &Path) -> anyhow::Result<PathBuf> {
    let (train, valid) = split_documents(read_documents(&bundled_corpus_path())?);
    let mut lines = String::new();
    for d in train.iter().step_by(8).chain(&valid) {
        lines.push_str(&serde_json::json!({"id": d.id, "text": d.text}).to_string());
        lines.push('\n');
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("corpus-quick.jsonl");
    clex_models::write_atomic(&path, lines.as_bytes())?;
    Ok(path)
}

/// Tokenised validation documents and the BOS the stage-1 tokenizer starts them with.
fn validation_tokens(data: &Path, tok: &Tokenizer) -> anyhow::Result<(Vec<Vec<u32>>, Option<u32>)> {
    let (_, valid) = split_documents(read_documents(data)?);
    let docs = valid.iter().map(|d| encode(tok, &d.text)).collect::<Result<Vec<_>, _>>()?;
    Ok((docs, boundary_id(tok)))
}

/// A model to evaluate: method key, label, how it was made, model directory, rope
/// override, training length.
struct Candidate {
    key: String,
    label: String,
    how: String,
    dir: PathBuf,
    rope: Option<RopeChoice>,
    train_len: usize,
}

fn candidates(s: &Settings, out_dir: &Path) -> Vec<Candidate> {
    // The model every stage-2 run starts from: stage 1 after its retrieval phase.
    let stage1 = out_dir.join(RETRIEVAL).join("model");
    let p = s.seq_len;
    let c = |key: &str, label: String, how: String, dir: PathBuf, rope, train_len| Candidate {
        key: key.into(),
        label,
        how,
        dir,
        rope,
        train_len,
    };
    let mut v = vec![
        c("rope-stage1", "RoPE, stage 1".into(), "stage 1 and its retrieval phase".into(), stage1.clone(), None, p),
        c(
            "dynamic-ntk",
            format!("dynamic NTK ({})", s.ntk_factor),
            "stage-1 weights, no training".into(),
            stage1,
            Some(RopeChoice::Dynamic(s.ntk_factor)),
            p,
        ),
    ];
    for run in stage2_runs(s) {
        let len = p * run.multiple;
        let mut label = report::rope_name(&run.rope);
        if let Some(r) = run.clex_lr_ratio {
            label.push_str(&format!(", ODE LR ×{r}"));
        }
        if run.multiple > 1 {
            label.push_str(&format!(", L = {}P", run.multiple));
        }
        v.push(c(run.key, label, format!("stage 2 at {len}"), out_dir.join(run.dir).join("model"), None, len));
    }
    v
}

fn evaluate(cand: &Candidate, set: &EvalSet, s: &Settings, task: &PasskeyTask) -> anyhow::Result<Evaluated> {
    let t0 = Instant::now();
    let model = load_for_eval::<Inference>(&cand.dir, cand.rope.as_ref(), &backend::device(None))
        .with_context(|| format!("loading {}", cand.dir.display()))?;
    let mut points = Vec::new();
    let mut by_position = Vec::new();
    let longest = s.lengths().into_iter().max().unwrap_or(s.seq_len);
    for len in s.lengths() {
        let t = Instant::now();
        let windows = set.windows(len);
        let tally = if len == longest {
            // The longest windows also say where in the window the loss comes from.
            let starts = position_buckets(s.seq_len, len);
            let parts = score_windows_by_position(&model, &windows, s.batch_tokens, &starts)?;
            let mut all = Tally::default();
            for (b, part) in parts.into_iter().enumerate() {
                all.merge(part);
                by_position.push((starts[b], starts.get(b + 1).copied().unwrap_or(len), part));
            }
            all
        } else {
            score_windows(&model, &windows, s.batch_tokens)?
        };
        eprintln!(
            "[experiment] {}: length {len:>5}: PPL {:>9.3}, accuracy {:.4} ({} windows, {:.0} s)",
            cand.label,
            tally.perplexity(),
            tally.accuracy(),
            windows.len(),
            t.elapsed().as_secs_f64()
        );
        points.push(Point { len, windows: windows.len(), tally });
    }
    let passkey = passkey(&model, cand, s, task)?;
    // What CLEX learned: θ(t) at the evaluated t = N/P (rows of its cached table).
    let theta = model.clex_layer.as_ref().map(|c| {
        let table = c.theta_table();
        s.multiples.iter().filter(|&&t| t <= table.max_factor()).map(|&t| (t, table.row(t).to_vec())).collect()
    });
    Ok(Evaluated {
        theta,
        params: model.num_params(),
        train_len: cand.train_len,
        passkey,
        key: cand.key.clone(),
        label: cand.label.clone(),
        how: cand.how.clone(),
        model: cand.dir.clone(),
        points,
        by_position,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// Passkey retrieval of `model` at the settings' lengths up to 16x its training length, at
/// every depth. Each (length, depth) cell draws its keys from its own seed, so every model
/// is asked for the same keys in the same prompts.
fn passkey(model: &CausalLm<Inference>, cand: &Candidate, s: &Settings, task: &PasskeyTask) -> anyhow::Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for m in s.passkey_multiples.iter().filter(|&&m| m * s.seq_len <= 16 * cand.train_len) {
        let len = m * s.seq_len;
        let t = Instant::now();
        let mut correct = 0;
        for (d, &depth) in s.passkey_depths.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(0x7061_7373 ^ ((len as u64) << 8) ^ d as u64);
            let cell = task.run_cell(model, len, depth, s.passkey_trials, &mut rng)?;
            correct += cell.correct();
            cells.push(cell);
        }
        eprintln!(
            "[experiment] {}: passkey at {len:>5}: {correct}/{} ({:.0} s)",
            cand.label,
            s.passkey_depths.len() * s.passkey_trials,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(cells)
}

/// Position buckets of a window of `len` tokens: L/8, L/4 and L/2 within the training
/// length (L/2.. is the reference the report compares later buckets with); L, 2L, 4L, ...
/// where extrapolation starts.
fn position_buckets(l: usize, len: usize) -> Vec<usize> {
    let mut starts = vec![0];
    let mut b = (l / 8).max(1);
    while b < len {
        if b > *starts.last().unwrap_or(&0) {
            starts.push(b);
        }
        b *= 2;
    }
    starts
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    if crate::train::rerun_if_other_backend(args.backend.as_deref())? {
        return Ok(());
    }
    let t0 = Instant::now();
    let mut s = Settings::new(&args);
    if s.steps.0 == 0 || s.steps.1 == 0 || s.retrieval_steps == 0 || s.regions == 0 {
        bail!("--stage1-steps, --retrieval-steps, --stage2-steps and --regions must be at least 1");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().context("locating the workspace")?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| root.join("runs").join(if s.quick { "experiment-quick" } else { "experiment" }));
    let report_dir = args.out.clone().unwrap_or_else(|| if s.quick { out_dir.clone() } else { root.join("docs") });
    eprintln!("[experiment] backend {}; runs in {}; report in {}", backend::name(), out_dir.display(), report_dir.display());
    if s.quick {
        s.data = quick_corpus(&out_dir)?;
    }
    let runs = stage2_runs(&s);
    if args.fresh {
        stages::fresh(&out_dir, runs.iter().map(|r| r.dir))?;
    }

    let stage1_dir = out_dir.join(STAGE1);
    let mut outcomes: Vec<(StageOutcome, RopeChoice)> = Vec::new();
    let stage1_opts = options(&s, stage1_dir.clone(), RopeChoice::None, Stage::Pretrain);
    let stage1_checkpoint_every = stage1_opts.checkpoint_every;
    let first = run_stage(STAGE1, stage1_opts, "")?;
    let retrieval_dir = out_dir.join(RETRIEVAL);
    let o = options(&s, retrieval_dir.clone(), RopeChoice::None, Stage::Retrieval { from: &stage1_dir });
    let retrieval = run_stage(RETRIEVAL, o, &first.fingerprint)?;
    let upstream = retrieval.fingerprint.clone();
    outcomes.push((first, RopeChoice::None));
    outcomes.push((retrieval, RopeChoice::None));
    for run in &runs {
        let o = options(&s, out_dir.join(run.dir), run.rope.clone(), Stage::Continue { from: &retrieval_dir, run });
        outcomes.push((run_stage(run.dir, o, &upstream)?, run.rope.clone()));
    }

    let tokenizer = load_tokenizer(&stage1_dir.join("tokenizer.json"))?;
    let (docs, bos) = validation_tokens(&s.data, &tokenizer)?;
    let task = PasskeyTask::new(&tokenizer, bos)?;
    let longest = s.seq_len * s.multiples.iter().max().copied().unwrap_or(1);
    let set = EvalSet::from_documents(&docs, bos, longest, s.regions);
    if set.regions.is_empty() {
        bail!("no validation document has {longest} tokens; the evaluation needs at least one");
    }
    eprintln!(
        "[experiment] evaluation: {} regions of {longest} tokens from {} of {} validation documents",
        set.regions.len(),
        set.documents,
        docs.len()
    );
    let mut evaluated = Vec::new();
    for cand in candidates(&s, &out_dir) {
        // What the scores depend on: the evaluation settings and text, the candidate, and the
        // settings of the stage that made its weights.
        let stage = cand.dir.parent().and_then(stages::finished_fingerprint).unwrap_or_default();
        let fingerprint = format!(
            "{:?} {:?} {:?} {:?} [{stage}]",
            (s.lengths(), s.regions, s.batch_tokens, &s.passkey_multiples, &s.passkey_depths, s.passkey_trials, &s.data),
            (set.regions.len(), set.region_len, set.documents),
            (&cand.key, &cand.label, &cand.how, &cand.rope, cand.train_len),
            &cand.dir,
        );
        let cached = cache::path(&out_dir, &cand.key);
        match cache::load(&cached, &fingerprint) {
            Some(m) if !args.fresh => {
                eprintln!("[experiment] {}: reusing its evaluation in {}", cand.label, cached.display());
                evaluated.push(m);
            }
            _ => {
                let m = evaluate(&cand, &set, &s, &task)?;
                cache::store(&cached, &m, &fingerprint)?;
                evaluated.push(m);
            }
        }
    }

    let report = Report {
        settings: &s,
        root: &root,
        stages: &outcomes,
        stage1_trend: &stages::validation_trend(&stage1_dir, s.seq_len, stage1_checkpoint_every),
        methods: &evaluated,
        eval_set: &set,
        eval_documents: docs.len(),
        wall_s: t0.elapsed().as_secs_f64(),
    };
    print!("{}", report.stdout_tables());
    let files = report.write(&report_dir)?;
    for f in files {
        println!("wrote {}", report.rel(&f));
    }
    Ok(())
}
