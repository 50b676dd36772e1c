//! `cargo xtask bench --long`: SmolLM2-135M (real weights, the HF directory `cargo xtask
//! fetch-smollm2` makes) at long contexts. At each context, each configuration in its own
//! child process: ours (prefill of the whole prompt, greedy decode steps after it, peak
//! memory, KV bytes), ours plain and with a fresh CLEX layer in lockstep (the overhead), and
//! with `--vs-torch` transformers eager and sdpa (`bench/torch_long.py`) on the same threads
//! and prompt tokens. The prompt is text of the bundled corpus, tokenised by SmolLM2's
//! tokenizer and repeated if it is short. Writes its own generated section of BENCHMARKS.md.
//!
//! A configuration that cannot fit is reported as "out of memory", not an error: it is
//! refused before launch when its estimate exceeds what the machine has free, and a child
//! whose resident memory passes that is stopped, so the machine never runs dry.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clex_models::ModelSource;

use super::long_report::{LongReport, ModelFacts};
use super::machine::{self, Machine};
use super::results::{LongResult, Outcome};
use super::worker::Task;
use super::{BenchArgs, output_paths, root, torch_python};

/// The contexts of a full `--long` run.
pub const CONTEXTS: [usize; 5] = [512, 2048, 8192, 16384, 32768];
/// The contexts of `--long --quick`.
pub const QUICK_CONTEXTS: [usize; 2] = [256, 1024];
/// T_max of the CLEX twin: P·T_max (64k for SmolLM2's P = 8192) covers every context.
pub const CLEX_FACTOR: usize = 8;

/// The measured configurations at one context, in the order of even runs.
const ENGINES: [&str; 6] = ["ours", "pair", "eager", "sdpa", "ours-f16", "ours-bf16"];
/// Largest context the half-precision runs of ours go to (they answer whether f16/bf16
/// weights make flex's decode faster; a long bf16 prefill would add minutes and no answer).
const HALF_MAX_CONTEXT: usize = 2048;
/// Largest context the plain/CLEX lockstep pair goes to: it prefills twice, and two 32k
/// prefills on 2 cores take half an hour.
const PAIR_MAX_CONTEXT: usize = 16384;

/// Sizes of one `--long` run.
#[derive(Debug, Clone)]
pub struct LongPlan {
    pub contexts: Vec<usize>,
    pub runs: usize,
    pub threads: usize,
    /// Greedy decode steps after each prefill.
    pub steps: usize,
    pub bandwidth_bytes: usize,
}

/// The HF directory: `--model`, else `<cache>/smollm2/hf`.
fn model_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(p) => p.to_path_buf(),
        None => crate::fetch_smollm2::cache_dir().context("no cache directory: set CLEX_CACHE (or HOME)")?.join("smollm2").join("hf"),
    };
    if !dir.join("config.json").is_file() || !dir.join("model.safetensors").is_file() {
        bail!("--long needs SmolLM2's HF directory at {} (run `cargo xtask fetch-smollm2`, or pass --model DIR)", dir.display());
    }
    Ok(dir)
}

/// `len` token ids of the bundled corpus's text under `model`'s tokenizer (documents in
/// file order, no special tokens, repeated from the start if the corpus is shorter),
/// written once to `work`.
fn corpus_ids(work: &Path, model: &Path, len: usize) -> anyhow::Result<PathBuf> {
    let path = work.join(format!("smollm2-corpus-ids-{len}.json"));
    if path.is_file() {
        return Ok(path);
    }
    let corpus = clex_eval::corpus::bundled_corpus_path();
    let docs = clex_eval::corpus::read_documents(&corpus)?;
    let tokenizer = ModelSource::open(model)?.tokenizer()?;
    let mut ids: Vec<u32> = Vec::with_capacity(len);
    for doc in &docs {
        let enc = tokenizer.encode(doc.text.as_str(), false).map_err(|e| anyhow!("tokenising {} of {}: {e}", doc.id, corpus.display()))?;
        ids.extend_from_slice(enc.get_ids());
        if ids.len() >= len {
            break;
        }
    }
    if ids.is_empty() {
        bail!("{} gave no tokens", corpus.display());
    }
    while ids.len() < len {
        ids.extend_from_within(..(len - ids.len()).min(ids.len()));
    }
    ids.truncate(len);
    std::fs::write(&path, serde_json::to_string(&ids)?)?;
    Ok(path)
}

/// How a watched child ended.
enum Finished {
    /// The JSON of its `BENCH_RESULT` line.
    Result(String),
    /// It ran out of memory; why.
    OutOfMemory(String),
    /// It failed otherwise; the error.
    Failed(String),
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Runs `cmd` to its end, stopping it if its resident memory passes `limit` bytes (checked
/// every 50 ms), and returns its result line or why it ran out of memory.
fn run_watched(mut cmd: Command, what: &str, limit: u64) -> anyhow::Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: could not start"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let mut stopped_at = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let rss = machine::rss_bytes_of(child.id());
        if rss > limit {
            stopped_at = Some(rss);
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if let Some(rss) = stopped_at {
        return Ok(Finished::OutOfMemory(format!(
            "stopped at {:.1} GiB resident, past the {:.1} GiB the machine had free",
            gib(rss),
            gib(limit)
        )));
    }
    if let Some(why) = stdout.lines().find_map(|l| l.strip_prefix("BENCH_OOM ")) {
        return Ok(Finished::OutOfMemory(format!("allocation failed: {why}")));
    }
    if let Some(line) = stderr.lines().find(|l| l.contains("memory allocation of")) {
        return Ok(Finished::OutOfMemory(line.trim().to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if status.signal() == Some(9) {
            return Ok(Finished::OutOfMemory("killed by SIGKILL (the kernel's out-of-memory killer)".into()));
        }
    }
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{what} failed ({status}):\n{}", tail.join("\n"));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_RESULT "))
        .map(str::to_string)
        .map(Finished::Result)
        .with_context(|| format!("{what}: no BENCH_RESULT line in its output"))
}

/// Bytes a configuration is expected to need at `context`, for the refusal before launch:
/// weights, the KV cache (twice for a cache grown geometrically; two caches and CLEX's raw
/// keys for the pair) and 1 GiB of working memory; eager attention also holds two
/// [heads, c, c] f32 score matrices (the product and its softmax) and a [c, c] f32 mask.
fn estimate_bytes(engine: &str, context: usize, facts: &ModelFacts) -> u64 {
    let kv = facts.kv_bytes_per_token * context as u64;
    let base = facts.weight_bytes + (1u64 << 30);
    let c2 = (context * context) as u64 * 4;
    match engine {
        "pair" => base + 5 * kv,
        "eager" => base + kv + (2 * facts.heads as u64 + 1) * c2,
        _ => base + 2 * kv,
    }
}

/// The worker or script command of `engine` at `context`.
fn command(
    engine: &str,
    context: usize,
    run: usize,
    ids: &Path,
    model: &Path,
    plan: &LongPlan,
    python: Option<&Path>,
) -> anyhow::Result<Command> {
    let threads = plan.threads.to_string();
    Ok(match engine {
        "eager" | "sdpa" => {
            let mut cmd = Command::new(python.context("--vs-torch found no python")?);
            cmd.arg(root().join("bench").join("torch_long.py")).arg("--model").arg(model).arg("--ids").arg(ids);
            cmd.args(["--context", &context.to_string(), "--steps", &plan.steps.to_string(), "--attn", engine, "--threads", &threads]);
            // As for bench/torch_reference.py: OpenMP threads that spin starve on a shared box.
            cmd.env("OMP_NUM_THREADS", &threads).env("MKL_NUM_THREADS", &threads).env("OMP_WAIT_POLICY", "PASSIVE");
            cmd.env("TOKENIZERS_PARALLELISM", "false");
            cmd
        }
        _ => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("bench-worker").env("RAYON_NUM_THREADS", &threads);
            let task = if engine == "pair" { Task::LongPair } else { Task::Long };
            cmd.args(["--task", &task.flag(), "--model"]).arg(model).arg("--ids").arg(ids);
            // The lockstep runs take three times the steps: their step-by-step ratios carry
            // the 1% target.
            let steps = if engine == "pair" { 3 * plan.steps } else { plan.steps };
            cmd.args(["--contexts", &context.to_string(), "--steps", &steps.to_string()]);
            if let Some(dtype) = engine.strip_prefix("ours-") {
                cmd.args(["--dtype", dtype]);
            }
            if engine == "pair" {
                cmd.args(["--clex-factor", &CLEX_FACTOR.to_string()]);
                if run % 2 == 1 {
                    cmd.arg("--flip");
                }
            }
            cmd
        }
    })
}

/// `cargo xtask bench --long`.
pub fn run(args: &BenchArgs, threads: usize) -> anyhow::Result<()> {
    let mut contexts = args.contexts.clone().unwrap_or_else(|| if args.quick { QUICK_CONTEXTS.to_vec() } else { CONTEXTS.to_vec() });
    contexts.sort_unstable();
    contexts.dedup();
    if contexts.first().is_some_and(|&c| c < 18) {
        bail!("--contexts: every context must be at least 18 tokens (the warm-up's)");
    }
    let plan = LongPlan {
        contexts,
        runs: args.runs.unwrap_or(1).max(1),
        threads,
        steps: if args.quick { 8 } else { 16 },
        bandwidth_bytes: if args.quick { 256 << 20 } else { 1 << 30 },
    };
    let started = Instant::now();
    let (work, out) = output_paths(args.out.as_deref(), args.quick, "quick-long", "long")?;
    let python = args.vs_torch.then(torch_python).transpose()?;
    let model = model_dir(args.model.as_deref())?;
    let facts = ModelFacts::read(&model)?;

    let mut machine = Machine::detect();
    eprintln!(
        "bench --long: {} ({} cores), {} threads, {} runs, contexts {:?}, load {:.2}",
        machine.cpu, machine.cores, plan.threads, plan.runs, plan.contexts, machine.load.0
    );
    eprintln!("bench --long: memory bandwidth ({} MiB buffer)", plan.bandwidth_bytes >> 20);
    let bandwidth = machine::read_bandwidth(plan.bandwidth_bytes, plan.threads, 5);
    let max = *plan.contexts.last().expect("contexts");
    let ids = corpus_ids(&work, &model, max + plan.steps + 2)?;

    let mut outcomes: BTreeMap<(usize, String), Vec<Outcome<LongResult>>> = BTreeMap::new();
    let mut pairs: BTreeMap<usize, Vec<Outcome<[LongResult; 2]>>> = BTreeMap::new();
    // The smallest context at which an engine ran out of memory: larger ones are not tried.
    let mut oom_from: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed = 0;
    let raw = work.join("long-results.json");
    for run in 0..plan.runs {
        for &context in &plan.contexts {
            let mut engines: Vec<&str> = ENGINES
                .iter()
                .copied()
                .filter(|e| python.is_some() || !matches!(*e, "eager" | "sdpa"))
                .filter(|e| !e.starts_with("ours-") || context <= HALF_MAX_CONTEXT)
                .filter(|e| *e != "pair" || context <= PAIR_MAX_CONTEXT)
                .collect();
            if run % 2 == 1 {
                engines.reverse();
            }
            for engine in engines {
                let what = format!("{engine} at {context}");
                let free = machine::available_memory_bytes().saturating_sub(1 << 30);
                let need = estimate_bytes(engine, context, &facts);
                let finished = if let Some(&c) = oom_from.get(engine) {
                    Finished::OutOfMemory(format!("not run: out of memory at {c} already"))
                } else if need > free {
                    Finished::OutOfMemory(format!("not run: estimated {:.1} GiB, {:.1} GiB free", gib(need), gib(free)))
                } else {
                    eprintln!("bench --long: run {}/{}: {what}", run + 1, plan.runs);
                    let cmd = command(engine, context, run, &ids, &model, &plan, python.as_deref())?;
                    run_watched(cmd, &what, free).unwrap_or_else(|e| Finished::Failed(format!("{e:#}")))
                };
                match finished {
                    Finished::Failed(why) => {
                        eprintln!("bench --long: {why}");
                        failed += 1;
                        if engine == "pair" {
                            pairs.entry(context).or_default().push(Outcome::Failed(why));
                        } else {
                            outcomes.entry((context, engine.to_string())).or_default().push(Outcome::Failed(why));
                        }
                    }
                    Finished::OutOfMemory(why) => {
                        eprintln!("bench --long: {what}: out of memory ({why})");
                        oom_from.entry(engine).or_insert(context);
                        if engine == "pair" {
                            pairs.entry(context).or_default().push(Outcome::OutOfMemory(why));
                        } else {
                            outcomes.entry((context, engine.to_string())).or_default().push(Outcome::OutOfMemory(why));
                        }
                    }
                    Finished::Result(json) if engine == "pair" => {
                        let pair: [LongResult; 2] = serde_json::from_str(&json).with_context(|| what.clone())?;
                        pairs.entry(context).or_default().push(Outcome::Done(pair));
                    }
                    Finished::Result(json) => {
                        let r: LongResult = serde_json::from_str(&json).with_context(|| what.clone())?;
                        eprintln!(
                            "bench --long: {what}: prefill {:.1} tok/s, decode {:.2} tok/s, peak {:.2} GiB",
                            r.prefill_tps(),
                            r.decode_tps(),
                            gib(r.peak_rss_bytes)
                        );
                        outcomes.entry((context, engine.to_string())).or_default().push(Outcome::Done(r));
                    }
                }
                // After every configuration, so that an interrupted run leaves what it measured.
                write_raw(&raw, &outcomes, &pairs)?;
            }
        }
    }
    machine.load.1 = machine::load_average();
    // Measured again at the end, the better of the two kept: a burst of load from another
    // process during one measurement would otherwise lower the floor of every context.
    let bandwidth = bandwidth.max(machine::read_bandwidth(plan.bandwidth_bytes, plan.threads, 5));

    let report = LongReport {
        machine,
        command: command_line(args),
        model: model.display().to_string(),
        facts,
        plan,
        bandwidth,
        outcomes,
        pairs,
        vs_torch: python.is_some(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
    };
    super::report::write_between(&out, super::long_report::BEGIN, super::long_report::END, &report.markdown(), Some(super::report::END))?;
    eprintln!("bench --long: wrote {} in {:.1} min", out.display(), report.minutes);
    print!("{}", report.summary());
    if failed > 0 {
        bail!("{failed} configuration(s) failed (their errors are above and in {}); the tables leave them out", out.display());
    }
    Ok(())
}

/// Every outcome as JSON (step times, tokens, memory), for a look behind the tables.
fn write_raw(
    path: &Path,
    outcomes: &BTreeMap<(usize, String), Vec<Outcome<LongResult>>>,
    pairs: &BTreeMap<usize, Vec<Outcome<[LongResult; 2]>>>,
) -> anyhow::Result<()> {
    let entry = |context: usize, engine: &str, run: usize, result: serde_json::Value, why_not: Option<(&str, &str)>| {
        let mut e = serde_json::json!({"context": context, "engine": engine, "run": run + 1});
        e["result"] = result;
        if let Some((what, why)) = why_not {
            e[what] = why.into();
        }
        e
    };
    let mut all = Vec::new();
    for ((context, engine), runs) in outcomes {
        for (run, o) in runs.iter().enumerate() {
            all.push(match o {
                Outcome::Done(r) => entry(*context, engine, run, serde_json::to_value(r)?, None),
                o => entry(*context, engine, run, serde_json::Value::Null, o.why_not()),
            });
        }
    }
    for (context, runs) in pairs {
        for (run, o) in runs.iter().enumerate() {
            all.push(match o {
                Outcome::Done(r) => entry(*context, "pair", run, serde_json::to_value(r)?, None),
                o => entry(*context, "pair", run, serde_json::Value::Null, o.why_not()),
            });
        }
    }
    std::fs::write(path, serde_json::to_string_pretty(&all)?).with_context(|| path.display().to_string())
}

/// The `--long` command as a user would type it again.
fn command_line(args: &BenchArgs) -> String {
    let mut s = String::from("cargo xtask bench --long");
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(c) = &args.contexts {
        s.push_str(&format!(" --contexts {}", c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")));
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
    if let Some(m) = &args.model {
        s.push_str(&format!(" --model {}", m.display()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eager's estimate carries the score matrices, quadratic in the context: at 16k tokens
    /// SmolLM2's nine heads need about 19 GiB for them alone, which the 24 GB box lacks.
    #[test]
    fn eager_estimate_grows_with_the_square_of_the_context() {
        let facts = ModelFacts { weight_bytes: 538_060_032, kv_bytes_per_token: 46_080, heads: 9, layers: 30, p: 8192 };
        let scores =
            |c: usize| estimate_bytes("eager", c, &facts) - estimate_bytes("sdpa", c, &facts) + facts.kv_bytes_per_token * c as u64;
        assert_eq!(scores(16384), 4 * scores(8192));
        assert!(gib(scores(16384)) > 18.0, "{}", gib(scores(16384)));
        assert!(gib(estimate_bytes("ours", 32768, &facts)) < 5.0);
    }

    /// A child that outgrows the limit is stopped and reported as out of memory, not an error.
    #[test]
    fn watchdog_stops_a_child_past_the_limit() {
        let mut cmd = Command::new("sh");
        // Holds ~64 MiB of resident memory for up to 10 s.
        cmd.args(["-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 10; echo ${#x}"]);
        let start = Instant::now();
        match run_watched(cmd, "sh", 16 << 20).unwrap() {
            Finished::OutOfMemory(why) => assert!(why.starts_with("stopped at"), "{why}"),
            Finished::Result(r) => panic!("not stopped: {r}"),
            Finished::Failed(e) => panic!("not stopped: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(9));
    }
}
