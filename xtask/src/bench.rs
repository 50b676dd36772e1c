//! `cargo xtask bench`: where clex-rs stands, as ratios measured in one run, against plain
//! RoPE in our own engine, against PyTorch/transformers on the same weights (`--vs-torch`),
//! and against the machine's memory bandwidth. Writes BENCHMARKS.md (its generated section).
//!
//! Every measured configuration runs in its own child process (`xtask bench-worker`) so its
//! peak memory is its own; CLEX and plain RoPE (and transformers) alternate within each run,
//! in reversed order on odd runs, so drift in a shared machine's load hits all of them. The
//! CLEX/plain ratios come from a further process per model and run that decodes (and trains)
//! both in lockstep on the same weight tensors, step by step.
//! The whole command runs from a release build: from a debug `cargo xtask` it builds
//! `xtask` with `--release` and hands over to it.
//!
//! `--long` runs the long-context suite instead (SmolLM2-135M at 512 to 32k tokens, against
//! transformers eager and sdpa with `--vs-torch`; [`long`]), into its own generated section.
//! `--serve` measures `clex serve` under load instead ([`serve`]): requests/s and tokens/s of
//! 1, 4 and 16 concurrent clients against as many requests in sequence.

mod long;
mod long_report;
mod machine;
mod models;
mod report;
mod results;
mod serve;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

pub use worker::{WorkerArgs, run as run_worker};

use machine::Machine;
use models::{Prepared, Preset};
use report::{CriterionRow, Report};
use results::{InferResult, TrainResult};
use worker::Task;

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Smoke test (about 2 minutes once built): quarter-size models, P = 64, 2 runs, short
    /// criterion runs. Writes <target>/bench/quick/BENCHMARKS.md unless --out is given.
    /// With --long: contexts 256 and 1024, 8 decode steps, into <target>/bench/quick-long/.
    #[arg(long)]
    quick: bool,
    /// Also run bench/torch_reference.py (transformers, eager, f32) on the plain-RoPE
    /// weights, alternating with ours; with --long bench/torch_long.py (eager and sdpa).
    /// Needs torch and transformers in the venv $CLEX_TORCH_VENV, else .venv-torch.
    #[arg(long)]
    vs_torch: bool,
    /// The long-context suite instead: SmolLM2-135M (real weights, `cargo xtask
    /// fetch-smollm2`) at each of --contexts: prefill, decode, peak memory, bandwidth floor,
    /// CLEX overhead. Writes its own generated section ("Long context").
    #[arg(long)]
    long: bool,
    /// The serving load benchmark instead: `clex serve` on SmolLM2-135M-Instruct (`cargo xtask
    /// fetch-smollm2`), 1, 4 and 16 clients (--quick: 1 and 4) sending at once against as many
    /// requests in sequence. Writes its own generated section ("Serving").
    #[arg(long, conflicts_with_all = ["long", "vs_torch"])]
    serve: bool,
    /// --long: prompt lengths [default: 512,2048,8192,16384,32768; --quick: 256,1024].
    #[arg(long, value_delimiter = ',', requires = "long")]
    contexts: Option<Vec<usize>>,
    /// --long: the HF directory [default: <cache>/smollm2/hf, where fetch-smollm2 puts it].
    #[arg(long, requires = "long")]
    model: Option<PathBuf>,
    /// Runs of every configuration; tables give the median and the range [default: 3;
    /// --quick: 2; --long and --serve: 1].
    #[arg(long)]
    runs: Option<usize>,
    /// The markdown file whose generated section is (re)written [default: BENCHMARKS.md].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Threads of burn-flex (RAYON_NUM_THREADS) and of torch (set_num_threads)
    /// [default: every core].
    #[arg(long)]
    threads: Option<usize>,
    /// Leave out the criterion micro-benchmarks (`cargo bench -p clex-core -p clex-models`).
    #[arg(long)]
    no_criterion: bool,
    /// Leave out the training steps.
    #[arg(long)]
    no_train: bool,
}

/// Sizes of one mode.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    runs: usize,
    threads: usize,
    /// Timed decode steps per context (three times as many in the lockstep runs, whose
    /// step-by-step ratios carry the <= 2% target).
    steps: usize,
    /// Training batch (rows × P tokens) and timed steps.
    train_rows: usize,
    train_steps: usize,
    /// Bytes of the bandwidth buffer.
    bandwidth_bytes: usize,
}

fn root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// The cargo target directory this binary was built into (`<target>/<profile>/xtask`).
/// Where a bench mode writes: its work directory `<target>/bench/<quick or full name>`
/// (created) and the report, `--out`, else BENCHMARKS.md in the work directory for --quick
/// runs and in the repository for full ones.
fn output_paths(out: Option<&Path>, quick: bool, quick_name: &str, full_name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let work = target_dir()?.join("bench").join(if quick { quick_name } else { full_name });
    std::fs::create_dir_all(&work)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| if quick { work.join("BENCHMARKS.md") } else { root().join("BENCHMARKS.md") });
    Ok((work, out))
}

fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().and_then(Path::parent).context("the xtask binary is not inside a target directory")?.to_path_buf())
}

/// `cargo xtask bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        return hand_over_to_release();
    }
    if clex_models::backend::name() != "flex (CPU)" {
        bail!("the benchmark measures the CPU backend (flex); this xtask was built with {}", clex_models::backend::name());
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if args.long {
        return long::run(&args, threads);
    }
    if args.serve {
        return serve::run(&args, threads);
    }
    let plan = Plan {
        quick: args.quick,
        runs: args.runs.unwrap_or(if args.quick { 2 } else { 3 }).max(1),
        threads,
        steps: if args.quick { 8 } else { 16 },
        train_rows: 1,
        train_steps: if args.quick { 2 } else { 4 },
        bandwidth_bytes: if args.quick { 256 << 20 } else { 1 << 30 },
    };
    let started = Instant::now();
    let (work, out) = output_paths(args.out.as_deref(), plan.quick, "quick", "full")?;
    let python = args.vs_torch.then(torch_python).transpose()?;

    let mut machine = Machine::detect();
    eprintln!("bench: {} ({} cores), {} threads, {} runs, load {:.2}", machine.cpu, machine.cores, plan.threads, plan.runs, machine.load.0);

    eprintln!("bench: memory bandwidth ({} MiB buffer)", plan.bandwidth_bytes >> 20);
    let bandwidth = machine::read_bandwidth(plan.bandwidth_bytes, plan.threads, 5);
    let bandwidth_1 = machine::read_bandwidth(plan.bandwidth_bytes, 1, 3);

    let mut presets = models::presets(plan.quick);
    presets.extend(models::moe_presets(plan.quick));
    let mut prepared = Vec::new();
    for p in &presets {
        eprintln!("bench: weights of {} in {}", p.name, work.display());
        prepared.push(models::prepare(p, &work)?);
    }
    let p = presets[0].p;
    let contexts: Vec<usize> = [1, 2, 4, 8].iter().map(|f| f * p).collect();
    let ids_len = (8 * p + 2).max(plan.train_rows * (p + 1));
    let ids = models::token_ids(&work, ids_len, presets[0].vocab)?;

    let mut infer: BTreeMap<(String, String), Vec<InferResult>> = BTreeMap::new();
    let mut train: BTreeMap<(String, String), Vec<TrainResult>> = BTreeMap::new();
    let mut train_alone: BTreeMap<(String, String), Vec<TrainResult>> = BTreeMap::new();
    let mut pairs: BTreeMap<String, Vec<[InferResult; 2]>> = BTreeMap::new();
    for run in 0..plan.runs {
        let forward = run % 2 == 0;
        let order: Vec<usize> = if forward { (0..presets.len()).collect() } else { (0..presets.len()).rev().collect() };
        for &i in &order {
            let (preset, dirs) = (&presets[i], &prepared[i]);
            let mut engines: Vec<&str> = vec!["rope", "clex", "pair"];
            if python.is_some() {
                engines.push("torch");
            }
            if !forward {
                engines.reverse();
            }
            for engine in engines {
                eprintln!("bench: run {}/{}: {} {engine} inference", run + 1, plan.runs, preset.name);
                if engine == "pair" {
                    pairs.entry(preset.name.to_string()).or_default().push(worker_pair(dirs, &ids, &contexts, &plan)?);
                    continue;
                }
                let result = match engine {
                    "torch" => torch_infer(python.as_deref().expect("checked"), &dirs.rope, &ids, &contexts, &plan)?,
                    _ => worker_infer(dir_of(dirs, engine), &ids, &contexts, &plan)?,
                };
                infer.entry((preset.name.to_string(), engine.to_string())).or_default().push(result);
            }
        }
        if !args.no_train {
            for &i in &order {
                let (preset, dirs) = (&presets[i], &prepared[i]);
                // One process per model for its peak memory (first run only: training is the
                // slow part), then both in lockstep for tokens/s and the ratio.
                if run == 0 {
                    for engine in ["rope", "clex"] {
                        eprintln!("bench: run {}/{}: {} {engine} training (peak memory)", run + 1, plan.runs, preset.name);
                        let result = serde_json::from_str(&worker_train(dir_of(dirs, engine), &ids, preset, &plan, None)?)?;
                        train_alone.entry((preset.name.to_string(), engine.to_string())).or_default().push(result);
                    }
                }
                eprintln!("bench: run {}/{}: {} rope + clex training in lockstep", run + 1, plan.runs, preset.name);
                let [rope, clex]: [TrainResult; 2] =
                    serde_json::from_str(&worker_train(&dirs.rope, &ids, preset, &plan, Some(&dirs.clex))?)?;
                train.entry((preset.name.to_string(), "rope".into())).or_default().push(rope);
                train.entry((preset.name.to_string(), "clex".into())).or_default().push(clex);
            }
        }
    }

    let criterion = if args.no_criterion { Vec::new() } else { run_criterion(&work, &plan)? };
    machine.load.1 = machine::load_average();

    let report = Report {
        machine,
        command: command_line(&args),
        plan_text: plan_text(&plan, &presets, &prepared, &contexts),
        presets: presets.clone(),
        contexts,
        threads: plan.threads,
        runs: plan.runs,
        bandwidth,
        bandwidth_1,
        infer,
        pairs,
        train,
        train_alone,
        criterion,
        vs_torch: python.is_some(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
    };
    let section = report.markdown();
    report::write_section(&out, &section)?;
    eprintln!("bench: wrote {} in {:.1} min", out.display(), report.minutes);
    print!("{}", report.summary());
    Ok(())
}

fn dir_of<'a>(dirs: &'a Prepared, engine: &str) -> &'a Path {
    if engine == "clex" { &dirs.clex } else { &dirs.rope }
}

/// The command as a user would type it again.
fn command_line(args: &BenchArgs) -> String {
    let mut s = String::from("cargo xtask bench");
    if args.quick {
        s.push_str(" --quick");
    }
    if args.vs_torch {
        s.push_str(" --vs-torch");
    }
    if let Some(r) = args.runs {
        s.push_str(&format!(" --runs {r}"));
    }
    if let Some(t) = args.threads {
        s.push_str(&format!(" --threads {t}"));
    }
    if args.no_criterion {
        s.push_str(" --no-criterion");
    }
    if args.no_train {
        s.push_str(" --no-train");
    }
    s
}

fn plan_text(plan: &Plan, presets: &[Preset], prepared: &[Prepared], contexts: &[usize]) -> String {
    let mut s = String::new();
    for (p, d) in presets.iter().zip(prepared) {
        let c = &p.config;
        s.push_str(&format!(
            "- `{}`: {} layers, width {}, {} heads of {}, MLP {}, vocab {}, P = {}, {:.1} M parameters{}\n",
            p.name,
            c["num_hidden_layers"],
            c["hidden_size"],
            c["num_attention_heads"],
            c["hidden_size"].as_u64().unwrap_or(0) / c["num_attention_heads"].as_u64().unwrap_or(1),
            c["intermediate_size"],
            p.vocab,
            p.p,
            d.params as f64 / 1e6,
            if c["model_type"] == "gpt_neox" { ", rotary_pct 0.25, parallel residual" } else { ", no GQA, untied head" },
        ));
    }
    s.push_str(&format!(
        "- Random weights (seed 2024), saved as HF directories; the CLEX twin is the same weights plus a fresh CLEX layer \
         (T_max {}, p = 1, tanh, h = 0.01; D = 0, which costs what a trained D costs).\n",
        models::MAX_FACTOR
    ));
    s.push_str(&format!(
        "- Decode ladder: one cache grown to {}; at each context, {} timed single-token steps ending there ({} in the lockstep \
         runs; untimed prefill in between), then the step past it (for CLEX a t boundary). Decode tokens/s = 1000 / median \
         step ms.\n",
        contexts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
        plan.steps,
        (3 * plan.steps).min(contexts[0] - 1)
    ));
    s.push_str(&format!(
        "- Training: {} × {} tokens per step, forward + backward + AdamW, {} timed steps after 1 warm-up, CLEX drawing t per step \
         as in training.\n",
        plan.train_rows, presets[0].p, plan.train_steps
    ));
    s
}

/// Builds xtask in release and runs the same command with it.
fn hand_over_to_release() -> anyhow::Result<()> {
    eprintln!("bench: building xtask in release (the first time compiles burn optimised: ~15 min on 2 cores)");
    let status =
        crate::cargo().current_dir(root()).args(["build", "--release", "-p", "xtask"]).status().context("could not start cargo")?;
    if !status.success() {
        bail!("cargo build --release -p xtask failed ({status})");
    }
    let exe = target_dir()?.join("release").join(if cfg!(windows) { "xtask.exe" } else { "xtask" });
    let status =
        Command::new(&exe).args(std::env::args_os().skip(1)).status().with_context(|| format!("could not start {}", exe.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", exe.display());
    }
    Ok(())
}

/// The venv's python, if it has torch and transformers; otherwise a clear error.
fn torch_python() -> anyhow::Result<PathBuf> {
    let venv = crate::tch::venv();
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        bail!(
            "--vs-torch needs a Python venv with torch and transformers at {} (or $CLEX_TORCH_VENV): \
             `cargo xtask setup-tch`, then `{}/bin/pip install transformers`",
            venv.display(),
            venv.display()
        );
    }
    let check = Command::new(&python)
        .args(["-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"])
        .output()
        .with_context(|| format!("could not run {}", python.display()))?;
    if !check.status.success() {
        bail!(
            "--vs-torch: {} cannot import torch and transformers ({}); install them with `{}/bin/pip install transformers`",
            python.display(),
            String::from_utf8_lossy(&check.stderr).lines().last().unwrap_or("").trim(),
            venv.display()
        );
    }
    Ok(python)
}

/// Runs a child and returns the JSON of its `BENCH_RESULT` line.
fn result_line(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{what}: could not start"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_RESULT "))
        .map(str::to_string)
        .with_context(|| format!("{what}: no BENCH_RESULT line in its output"))
}

fn worker(plan: &Plan) -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("bench-worker").env("RAYON_NUM_THREADS", plan.threads.to_string());
    Ok(cmd)
}

fn contexts_arg(contexts: &[usize]) -> String {
    contexts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

fn worker_infer(model: &Path, ids: &Path, contexts: &[usize], plan: &Plan) -> anyhow::Result<InferResult> {
    let mut cmd = worker(plan)?;
    cmd.args(["--task", &Task::Infer.flag(), "--model"]).arg(model).arg("--ids").arg(ids);
    cmd.args(["--prefill", &contexts[0].to_string(), "--contexts", &contexts_arg(contexts), "--steps", &plan.steps.to_string()]);
    Ok(serde_json::from_str(&result_line(cmd, &format!("bench-worker infer {}", model.display()))?)?)
}

/// Plain RoPE and CLEX on shared weights, in lockstep in one process: [plain, CLEX].
fn worker_pair(dirs: &Prepared, ids: &Path, contexts: &[usize], plan: &Plan) -> anyhow::Result<[InferResult; 2]> {
    let mut cmd = worker(plan)?;
    cmd.args(["--task", &Task::Pair.flag(), "--model"]).arg(&dirs.rope).arg("--other").arg(&dirs.clex).arg("--ids").arg(ids);
    let steps = (3 * plan.steps).min(contexts[0] - 1);
    cmd.args(["--prefill", &contexts[0].to_string(), "--contexts", &contexts_arg(contexts), "--steps", &steps.to_string()]);
    Ok(serde_json::from_str(&result_line(cmd, &format!("bench-worker pair {}", dirs.rope.display()))?)?)
}

/// Training steps of `model` alone, or in lockstep with the CLEX twin of `clex`: the JSON of
/// one or two [`TrainResult`]s.
fn worker_train(model: &Path, ids: &Path, preset: &Preset, plan: &Plan, clex: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = worker(plan)?;
    let task = if clex.is_some() { Task::TrainPair } else { Task::Train };
    cmd.args(["--task", &task.flag(), "--model"]).arg(model).arg("--ids").arg(ids);
    if let Some(c) = clex {
        cmd.arg("--other").arg(c);
    }
    cmd.args(["--batch", &plan.train_rows.to_string(), "--seq-len", &preset.p.to_string(), "--steps", &plan.train_steps.to_string()]);
    result_line(cmd, &format!("bench-worker train {}", model.display()))
}

fn torch_infer(python: &Path, model: &Path, ids: &Path, contexts: &[usize], plan: &Plan) -> anyhow::Result<InferResult> {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("bench").join("torch_reference.py")).arg("--model").arg(model).arg("--ids").arg(ids);
    cmd.args(["--prefill", &contexts[0].to_string(), "--contexts", &contexts_arg(contexts), "--steps", &plan.steps.to_string()]);
    cmd.args(["--threads", &plan.threads.to_string()]);
    let t = plan.threads.to_string();
    cmd.env("OMP_NUM_THREADS", &t).env("MKL_NUM_THREADS", &t).env("TOKENIZERS_PARALLELISM", "false");
    // OpenMP threads that spin while waiting starve when another process holds a core: on
    // the shared 2-core box a decode step took 100-150 ms spinning, 6 ms sleeping (rayon,
    // on our side, sleeps too).
    cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    Ok(serde_json::from_str(&result_line(cmd, &format!("torch_reference.py {}", model.display()))?)?)
}

/// Runs the criterion benches of clex-core and clex-models and reads their estimates.
fn run_criterion(work: &Path, plan: &Plan) -> anyhow::Result<Vec<CriterionRow>> {
    let home = work.join("criterion");
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    let log_path = work.join("criterion.log");
    let log = std::fs::File::create(&log_path)?;
    for (krate, bench) in [("clex-core", "rope"), ("clex-models", "decode")] {
        eprintln!("bench: cargo bench -p {krate} --bench {bench} (log: {})", log_path.display());
        let mut cmd = crate::cargo();
        cmd.current_dir(root()).args(["bench", "-p", krate, "--bench", bench, "--"]);
        if plan.quick {
            cmd.args(["--warm-up-time", "0.3", "--measurement-time", "1"]);
            cmd.env("CLEX_BENCH_QUICK", "1");
        }
        cmd.env("CRITERION_HOME", &home).env("RAYON_NUM_THREADS", plan.threads.to_string());
        let status = cmd.stdout(log.try_clone()?).stderr(log.try_clone()?).status().context("could not start cargo bench")?;
        if !status.success() {
            bail!("cargo bench -p {krate} --bench {bench} failed ({status}); see {}", log_path.display());
        }
    }
    report::read_criterion(&home)
}
