//! `cargo xtask experiment`: CLEX's length-extrapolation result at small scale, with
//! baselines. Stage 1 pretrains a tiny LLaMA with plain RoPE at L; stage 2 continues it at
//! L under plain RoPE, PI, YaRN and CLEX (same data, steps and seed); every model, and
//! dynamic NTK on the stage-1 weights, is scored at L..16L on the same validation windows;
//! the report (markdown, SVG, JSON) is written from those numbers.

mod report;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use clex_eval::corpus::{bundled_corpus_path, read_documents, split_documents};
use clex_eval::eval::{EvalSet, Tally, score_windows, score_windows_by_position};
use clex_models::backend::{self, Inference};
use clex_train::preset::load_for_eval;
use clex_train::preset::{Preset, RopeChoice};
use clex_train::tokenizer::{boundary_id, encode, load_tokenizer};
use clex_train::trainer::TrainOptions;

use report::{Evaluated, Point, Report};
use stages::{STAGE1, StageOutcome, run_stage};

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
    /// Also train PI (factor 4) at 4L, the "trained at the target length" reference.
    #[arg(long)]
    with_long_pi: bool,
    /// Train every stage again, even when a finished stage with the same settings exists.
    #[arg(long)]
    fresh: bool,
    /// Micro-batches of stage 1 (overrides the mode's default).
    #[arg(long)]
    stage1_steps: Option<usize>,
    /// Micro-batches of each stage-2 run (overrides the mode's default).
    #[arg(long)]
    stage2_steps: Option<usize>,
    /// Evaluation regions of the longest length each (the token budget per length;
    /// overrides the mode's default).
    #[arg(long)]
    regions: Option<usize>,
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
    /// Peak learning rates of stage 1 and stage 2.
    pub lr: (f64, f64),
    /// Seeds of stage 1 and stage 2 (stage 2 draws fresh batches, not stage 1's first ones).
    pub seed: (u64, u64),
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
    /// Also PI trained at 4L.
    pub long_pi: bool,
    /// The documents (the bundled corpus, or the quick mode's slice of it).
    pub data: PathBuf,
}

impl Settings {
    fn new(args: &ExperimentArgs) -> Self {
        // Full mode: ~50-60 min on 2 shared CPU cores (measured: 0.55-0.7 s per baseline step and
        // 0.75 s per CLEX step at L = 128, batch 8; evaluation ~1.5 min per model); quick: ~2-3 min.
        let (steps, multiples, regions) =
            if args.quick { ((60, 15), vec![1, 2, 4, 8], 2) } else { ((2000, 600), vec![1, 2, 4, 8, 16], 16) };
        Settings {
            quick: args.quick,
            seq_len: Preset::Tiny.max_position_embeddings(),
            batch_size: 8,
            steps: (args.stage1_steps.unwrap_or(steps.0), args.stage2_steps.unwrap_or(steps.1)),
            lr: (3e-3, 1e-3),
            seed: (42, 43),
            max_factor: 16,
            pi_factor: 4.0,
            yarn_factor: 8.0,
            ntk_factor: 2.0,
            multiples,
            regions: args.regions.unwrap_or(regions),
            batch_tokens: 4096,
            long_pi: args.with_long_pi,
            data: bundled_corpus_path(),
        }
    }

    fn lengths(&self) -> Vec<usize> {
        self.multiples.iter().map(|m| m * self.seq_len).collect()
    }
}

/// A stage-2 run: directory name, method key, rope, training length multiple.
fn stage2_runs(s: &Settings) -> Vec<(&'static str, &'static str, RopeChoice, usize)> {
    let mut runs = vec![
        ("stage2-rope", "rope", RopeChoice::None, 1),
        ("stage2-pi", "pi", RopeChoice::Linear(s.pi_factor), 1),
        ("stage2-yarn", "yarn", RopeChoice::Yarn(s.yarn_factor), 1),
        ("stage2-clex", "clex", RopeChoice::Clex { max_factor: s.max_factor }, 1),
    ];
    if s.long_pi {
        runs.push(("stage2-pi-4L", "pi-4L", RopeChoice::Linear(s.pi_factor), 4));
    }
    runs
}

fn options(s: &Settings, dir: PathBuf, rope: RopeChoice, stage1: Option<&Path>, multiple: usize) -> TrainOptions {
    let mut o = TrainOptions::tiny(dir);
    o.data = s.data.clone();
    o.rope = rope;
    // Longer training windows keep the tokens per micro-batch (and the step count) equal.
    o.seq_len = s.seq_len * multiple;
    o.batch_size = (s.batch_size / multiple).max(1);
    let (steps, lr, seed) = match stage1 {
        None => (s.steps.0, s.lr.0, s.seed.0),
        Some(dir) => {
            o.init_from = Some(dir.join("model"));
            o.tokenizer = Some(dir.join("tokenizer.json"));
            (s.steps.1, s.lr.1, s.seed.1)
        }
    };
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
fn validation_tokens(data: &Path, tokenizer: &Path) -> anyhow::Result<(Vec<Vec<u32>>, Option<u32>)> {
    let tok = load_tokenizer(tokenizer)?;
    let (_, valid) = split_documents(read_documents(data)?);
    let docs = valid.iter().map(|d| encode(&tok, &d.text)).collect::<Result<Vec<_>, _>>()?;
    Ok((docs, boundary_id(&tok)))
}

/// A model to evaluate: method key, label, how it was made, model directory, rope override.
struct Candidate {
    key: String,
    label: String,
    how: String,
    dir: PathBuf,
    rope: Option<RopeChoice>,
}

fn candidates(s: &Settings, out_dir: &Path) -> Vec<Candidate> {
    let stage1 = out_dir.join(STAGE1).join("model");
    let l = s.seq_len;
    let c = |key: &str, label: String, how: String, dir: PathBuf, rope| Candidate { key: key.into(), label, how, dir, rope };
    let mut v = vec![
        c("rope-stage1", "RoPE, stage 1".into(), "stage 1 only".into(), stage1.clone(), None),
        c("rope", "RoPE".into(), format!("stage 2 at {l}"), out_dir.join("stage2-rope/model"), None),
        c("pi", format!("PI (linear {})", s.pi_factor), format!("stage 2 at {l}"), out_dir.join("stage2-pi/model"), None),
        c("yarn", format!("YaRN ({})", s.yarn_factor), format!("stage 2 at {l}"), out_dir.join("stage2-yarn/model"), None),
        c(
            "dynamic-ntk",
            format!("dynamic NTK ({})", s.ntk_factor),
            "stage-1 weights, no training".into(),
            stage1,
            Some(RopeChoice::Dynamic(s.ntk_factor)),
        ),
        c("clex", format!("CLEX (T_max {})", s.max_factor), format!("stage 2 at {l}"), out_dir.join("stage2-clex/model"), None),
    ];
    if s.long_pi {
        v.push(c(
            "pi-4L",
            format!("PI (linear {}) at 4L", s.pi_factor),
            format!("stage 2 at {}", 4 * l),
            out_dir.join("stage2-pi-4L/model"),
            None,
        ));
    }
    v
}

fn evaluate(cand: &Candidate, set: &EvalSet, s: &Settings) -> anyhow::Result<Evaluated> {
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
    // What CLEX learned: θ(t) at the evaluated t = N/P (rows of its cached table).
    let theta = model.clex_layer.as_ref().map(|c| {
        let table = c.theta_table();
        s.multiples.iter().filter(|&&t| t <= table.max_factor()).map(|&t| (t, table.row(t).to_vec())).collect()
    });
    Ok(Evaluated {
        theta,
        params: model.num_params(),
        key: cand.key.clone(),
        label: cand.label.clone(),
        how: cand.how.clone(),
        model: cand.dir.clone(),
        points,
        by_position,
        wall_s: t0.elapsed().as_secs_f64(),
    })
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
    if s.steps.0 == 0 || s.steps.1 == 0 || s.regions == 0 {
        bail!("--stage1-steps, --stage2-steps and --regions must be at least 1");
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
        stages::fresh(&out_dir, runs.iter().map(|r| r.0))?;
    }

    let stage1_dir = out_dir.join(STAGE1);
    let mut outcomes: Vec<(StageOutcome, RopeChoice)> = Vec::new();
    let stage1_opts = options(&s, stage1_dir.clone(), RopeChoice::None, None, 1);
    let stage1_checkpoint_every = stage1_opts.checkpoint_every;
    let first = run_stage(STAGE1, stage1_opts, "")?;
    let upstream = first.fingerprint.clone();
    outcomes.push((first, RopeChoice::None));
    for (name, _, rope, multiple) in &runs {
        let o = options(&s, out_dir.join(name), rope.clone(), Some(&stage1_dir), *multiple);
        outcomes.push((run_stage(name, o, &upstream)?, rope.clone()));
    }

    let (docs, bos) = validation_tokens(&s.data, &stage1_dir.join("tokenizer.json"))?;
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
        evaluated.push(evaluate(&cand, &set, &s)?);
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
