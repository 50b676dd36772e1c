//! `cargo xtask bench --serve`: what continuous batching buys `clex serve`. Starts the release
//! `clex` binary on SmolLM2-135M-Instruct (the GGUF `cargo xtask fetch-smollm2` fetches) with
//! `--parallel 16`, then, for c clients, sends c completion requests with distinct prompts
//! (a) one after another and (b) all at once from c concurrent clients, through reqwest, and
//! compares the wall times. Greedy, with the model's end-of-sequence tokens banned through
//! `logit_bias`, so that every request generates exactly `max_tokens` tokens in both modes.
//! Writes its own generated section of BENCHMARKS.md and `serve-results.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::machine::{self, Machine};
use super::results::Spread;
use super::{BenchArgs, output_paths, root};

/// Marks the start of the serving section; everything outside the markers is kept.
pub const BEGIN: &str = "<!-- BEGIN cargo xtask bench --serve: generated, edit outside these markers -->";
/// Marks its end.
pub const END: &str = "<!-- END cargo xtask bench --serve -->";

/// Rows the server decodes together (`clex serve --parallel`).
const PARALLEL: usize = 16;
/// How long the server may take to load the model and bind.
const STARTUP: Duration = Duration::from_secs(300);

/// Sizes of one `--serve` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServePlan {
    /// Client counts c, each measured sequentially and concurrently.
    pub clients: Vec<usize>,
    /// Tokens every request generates.
    pub max_tokens: usize,
    pub runs: usize,
    /// RAYON_NUM_THREADS of the server.
    pub threads: usize,
    /// `--parallel` of the server.
    pub parallel: usize,
}

/// How the c requests of one measurement are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One client, each request sent when the previous one is answered.
    Sequential,
    /// c clients, all sending at once.
    Concurrent,
}

impl Mode {
    /// As the tables and the log write it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Concurrent => "concurrent",
        }
    }
}

/// One measurement: c requests in one mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub clients: usize,
    pub mode: Mode,
    /// 1-based.
    pub run: usize,
    /// From the first request sent to the last answer received, s.
    pub wall_s: f64,
    /// Each request's prompt tokens, as the server's `usage` counted them.
    pub prompt_tokens: Vec<usize>,
    /// Completion tokens of all requests together (`usage`).
    pub generated_tokens: usize,
    /// Each request's time from sent to answered, s.
    pub latency_s: Vec<f64>,
    /// The most rows any of these requests was decoded with (the server's log); None when
    /// the log did not show every request.
    pub peak_rows: Option<usize>,
}

impl Measurement {
    /// Requests answered per second of wall time.
    pub fn requests_per_s(&self) -> f64 {
        self.latency_s.len() as f64 / self.wall_s
    }

    /// Generated tokens per second of wall time, all requests together.
    pub fn tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.wall_s
    }

    /// A request's mean time from sent to answered.
    pub fn mean_latency_s(&self) -> f64 {
        self.latency_s.iter().sum::<f64>() / self.latency_s.len().max(1) as f64
    }
}

/// Everything one `--serve` run measured (also the JSON written next to the other outputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeReport {
    pub machine: Machine,
    pub command: String,
    /// The GGUF served.
    pub model: String,
    /// The server's own words on its backend, parallelism and context (its first line).
    pub server: String,
    /// Token ids banned with logit_bias -100 (the model's end-of-sequence tokens).
    pub banned_tokens: Vec<u32>,
    pub plan: ServePlan,
    pub measurements: Vec<Measurement>,
    pub minutes: f64,
}

/// One `[clex serve] <id>: <reason>; <p> prompt + <g> generated tokens; batched with up to
/// <n> rows` line of the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishLine {
    pub id: String,
    pub reason: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub rows: usize,
}

/// Parses a request's finish line; None for any other line.
pub fn parse_finish_line(line: &str) -> Option<FinishLine> {
    let rest = line.trim().strip_prefix("[clex serve] ")?;
    let (id, rest) = rest.split_once(": ")?;
    let (reason, rest) = rest.split_once("; ")?;
    let (prompt, rest) = rest.split_once(" prompt + ")?;
    let (generated, rest) = rest.split_once(" generated tokens; batched with up to ")?;
    let rows = rest.strip_suffix(" rows")?;
    Some(FinishLine {
        id: id.to_string(),
        reason: reason.to_string(),
        prompt_tokens: prompt.parse().ok()?,
        generated_tokens: generated.parse().ok()?,
        rows: rows.parse().ok()?,
    })
}

/// `n` distinct, deterministic prompts of some 40-50 SmolLM2 tokens each: one report opening
/// per topic, so that no two requests share more than a template's prefix.
pub fn prompts(n: usize) -> Vec<String> {
    const TOPICS: [&str; 16] = [
        "the history of the bicycle",
        "how coral reefs form",
        "the first transatlantic telegraph cable",
        "why bread rises in the oven",
        "the migration of arctic terns",
        "how a lighthouse lens focuses light",
        "the invention of the printing press",
        "why the sky looks blue at noon",
        "the life cycle of a honeybee colony",
        "how glaciers carve mountain valleys",
        "the building of the Roman aqueducts",
        "why cats purr",
        "the chemistry of rust on iron bridges",
        "how tides follow the moon",
        "the origins of the game of chess",
        "how volcanoes create new islands",
    ];
    (0..n)
        .map(|i| {
            let topic = TOPICS[i % TOPICS.len()];
            // Past 16 prompts the round number keeps them distinct.
            let round = if i < TOPICS.len() { String::new() } else { format!(" (part {})", i / TOPICS.len() + 1) };
            format!(
                "The following is a short report{round} on {topic}. It explains where the subject comes from, how people came \
                 to understand it, and what is still unknown. It is written for a curious reader.\n\n"
            )
        })
        .collect()
}

/// A running `clex serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    /// Its first line: model, backend, parallelism, context, address.
    banner: String,
    /// Every stderr line after the banner.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `clex serve` on `model` on a free loopback port and waits for its address.
    fn start(clex: &Path, model: &Path, plan: &ServePlan) -> anyhow::Result<Server> {
        let mut child = Command::new(clex)
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--port", "0", "--parallel", &plan.parallel.to_string(), "--model-id", "smollm2"])
            .env("RAYON_NUM_THREADS", plan.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {} serve", clex.display()))?;
        let stderr = child.stderr.take().context("clex serve: no stderr pipe")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (banner_tx, banner_rx) = mpsc::channel();
        let sink = log.clone();
        // Drains stderr for the server's whole life, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut banner = Some(banner_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http://")
                    && let Some(tx) = banner.take()
                {
                    let _ = tx.send(line);
                } else {
                    sink.lock().expect("server log").push(line);
                }
            }
        });
        let started = Instant::now();
        let banner = loop {
            match banner_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < STARTUP => {
                    if let Some(status) = child.try_wait()? {
                        std::thread::sleep(Duration::from_millis(200));
                        bail!("clex serve exited ({status}) before listening:\n{}", log.lock().expect("server log").join("\n"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    bail!("clex serve printed no address within {} s:\n{}", STARTUP.as_secs(), log.lock().expect("server log").join("\n"));
                }
            }
        };
        let base = banner.split("listening on ").nth(1).context("clex serve: no address in its first line")?.trim().to_string();
        Ok(Server { child, base, banner, log })
    }

    /// The most rows of the finish lines of `ids`, waiting up to 2 s for them to arrive.
    fn peak_rows(&self, ids: &[String]) -> Option<usize> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let rows: BTreeMap<String, usize> =
                self.log.lock().expect("server log").iter().filter_map(|l| parse_finish_line(l)).map(|f| (f.id, f.rows)).collect();
            let found: Vec<usize> = ids.iter().filter_map(|id| rows.get(id).copied()).collect();
            if found.len() == ids.len() {
                return found.into_iter().max();
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What one answered request said.
struct Answer {
    id: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    latency_s: f64,
}

fn client() -> anyhow::Result<reqwest::Client> {
    // No proxy: the server is on loopback, and a proxy from the environment must not see it.
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1800)).build().context("building the HTTP client")
}

/// One `POST /v1/completions`; an error for any refusal or an early end (the ban failed).
async fn complete(client: &reqwest::Client, url: &str, body: &Value, max_tokens: usize) -> anyhow::Result<Answer> {
    let start = Instant::now();
    let response = client.post(url).json(body).send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.with_context(|| format!("POST {url}: reading the answer"))?;
    let answer: Value = serde_json::from_str(&text).with_context(|| format!("POST {url}: {status}, and the body is not JSON: {text}"))?;
    let latency_s = start.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("POST {url}: {status}: {answer}");
    }
    let count =
        |key: &str| answer["usage"][key].as_u64().map(|n| n as usize).with_context(|| format!("POST {url}: no usage.{key} in {answer}"));
    let (prompt_tokens, completion_tokens) = (count("prompt_tokens")?, count("completion_tokens")?);
    if completion_tokens != max_tokens {
        bail!(
            "POST {url}: {completion_tokens} tokens generated, not {max_tokens} (finish_reason {}): the end-of-sequence ban \
             (logit_bias {}) did not hold",
            answer["choices"][0]["finish_reason"],
            body["logit_bias"]
        );
    }
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    Ok(Answer { id, prompt_tokens, completion_tokens, latency_s })
}

/// The request body of `prompt`: greedy, `max_tokens`, the end-of-sequence tokens banned.
fn body(prompt: &str, max_tokens: usize, banned: &[u32]) -> Value {
    let bias: serde_json::Map<String, Value> = banned.iter().map(|t| (t.to_string(), json!(-100))).collect();
    json!({"model": "smollm2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logit_bias": bias})
}

/// Sends `bodies` in `mode` and times them.
fn measure(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    bodies: &[Value],
    mode: Mode,
    max_tokens: usize,
    run: usize,
) -> anyhow::Result<Measurement> {
    let url = format!("{}/v1/completions", server.base);
    // Clients are built before the clock starts.
    let clients: Vec<reqwest::Client> = match mode {
        Mode::Sequential => vec![client()?],
        Mode::Concurrent => bodies.iter().map(|_| client()).collect::<anyhow::Result<_>>()?,
    };
    let start = Instant::now();
    let answers: Vec<Answer> = runtime.block_on(async {
        match mode {
            Mode::Sequential => {
                let mut answers = Vec::with_capacity(bodies.len());
                for b in bodies {
                    answers.push(complete(&clients[0], &url, b, max_tokens).await?);
                }
                anyhow::Ok(answers)
            }
            Mode::Concurrent => {
                let tasks: Vec<_> = clients
                    .into_iter()
                    .zip(bodies.iter().cloned())
                    .map(|(c, b)| {
                        let url = url.clone();
                        tokio::spawn(async move { complete(&c, &url, &b, max_tokens).await })
                    })
                    .collect();
                let mut answers = Vec::with_capacity(tasks.len());
                for t in tasks {
                    answers.push(t.await.context("a client task panicked")??);
                }
                anyhow::Ok(answers)
            }
        }
    })?;
    let wall_s = start.elapsed().as_secs_f64();
    let ids: Vec<String> = answers.iter().map(|a| a.id.clone()).collect();
    Ok(Measurement {
        clients: bodies.len(),
        mode,
        run: run + 1,
        wall_s,
        prompt_tokens: answers.iter().map(|a| a.prompt_tokens).collect(),
        generated_tokens: answers.iter().map(|a| a.completion_tokens).sum(),
        latency_s: answers.iter().map(|a| a.latency_s).collect(),
        peak_rows: server.peak_rows(&ids),
    })
}

/// `<cache>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, or the error that says how to get it.
fn smollm2_gguf() -> anyhow::Result<PathBuf> {
    let cache = crate::fetch_smollm2::cache_dir().context("no cache directory: set CLEX_CACHE (or HOME)")?;
    let gguf = cache.join("smollm2").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        bail!("bench --serve: {} is missing: run cargo xtask fetch-smollm2", gguf.display());
    }
    Ok(gguf)
}

/// The tokens `clex serve` stops at on this model, as it computes them: the config's EOS ids
/// and the chat template's end-of-turn token.
fn end_tokens(gguf: &Path) -> anyhow::Result<Vec<u32>> {
    let source = clex_models::ModelSource::open(gguf)?;
    let eos = &source.config().eos_token_ids;
    let mut ids = match source.chat_template()? {
        Some(template) => template.stop_tokens(eos, &source.tokenizer()?),
        None => eos.clone(),
    };
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!("{}: no end-of-sequence token (eos_token_id) to ban", gguf.display());
    }
    Ok(ids)
}

/// Builds `clex` in the profile of this xtask and returns its path, beside this binary.
fn build_clex() -> anyhow::Result<PathBuf> {
    let mut cmd = crate::cargo();
    cmd.current_dir(root()).args(["build", "-p", "clex-cli"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    eprintln!("bench --serve: cargo build{} -p clex-cli", if cfg!(debug_assertions) { "" } else { " --release" });
    let status = cmd.status().context("could not start cargo")?;
    if !status.success() {
        bail!("cargo build -p clex-cli failed ({status})");
    }
    let exe = std::env::current_exe()?.with_file_name(if cfg!(windows) { "clex.exe" } else { "clex" });
    if !exe.is_file() {
        bail!("no clex binary at {} after cargo build -p clex-cli", exe.display());
    }
    Ok(exe)
}

/// `cargo xtask bench --serve`.
pub fn run(args: &BenchArgs, threads: usize) -> anyhow::Result<()> {
    let plan = ServePlan {
        clients: if args.quick { vec![1, 4] } else { vec![1, 4, 16] },
        max_tokens: if args.quick { 16 } else { 64 },
        runs: args.runs.unwrap_or(1).max(1),
        threads,
        parallel: PARALLEL,
    };
    let gguf = smollm2_gguf()?;
    let (work, out) = output_paths(args.out.as_deref(), args.quick, "quick-serve", "serve")?;
    let clex = build_clex()?;
    let banned = end_tokens(&gguf)?;

    let started = Instant::now();
    let mut machine = Machine::detect();
    eprintln!(
        "bench --serve: {} ({} cores), {} threads, clients {:?}, {} tokens each, {} run(s), load {:.2}",
        machine.cpu, machine.cores, plan.threads, plan.clients, plan.max_tokens, plan.runs, machine.load.0
    );
    let server = Server::start(&clex, &gguf, &plan)?;
    eprintln!("bench --serve: {}", server.banner);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")?;
    let most = *plan.clients.iter().max().expect("clients");
    let texts = prompts(most);
    // Warm-up: every prompt at once, a few tokens each, so that first-use costs (allocations
    // of a full batch, page faults on the weights) fall outside the timed requests.
    let warm: Vec<Value> = texts.iter().map(|p| body(p, 2, &banned)).collect();
    measure(&runtime, &server, &warm, Mode::Concurrent, 2, 0).context("warm-up")?;

    let mut measurements = Vec::new();
    for run in 0..plan.runs {
        for &c in &plan.clients {
            let bodies: Vec<Value> = texts[..c].iter().map(|p| body(p, plan.max_tokens, &banned)).collect();
            // Reversed on odd runs, so that drift in a shared machine's load hits both modes.
            let modes = if run % 2 == 0 { [Mode::Sequential, Mode::Concurrent] } else { [Mode::Concurrent, Mode::Sequential] };
            for mode in modes {
                let m = measure(&runtime, &server, &bodies, mode, plan.max_tokens, run)?;
                eprintln!(
                    "bench --serve: run {}/{}: {c} {}: {:.1} s, {:.2} requests/s, {:.1} tokens/s, up to {} rows",
                    run + 1,
                    plan.runs,
                    mode.name(),
                    m.wall_s,
                    m.requests_per_s(),
                    m.tokens_per_s(),
                    m.peak_rows.map_or("?".into(), |r| r.to_string())
                );
                measurements.push(m);
            }
        }
    }
    let words = server_words(&server.banner);
    drop(server);
    machine.load.1 = machine::load_average();

    let report = ServeReport {
        machine,
        command: command_line(args),
        model: gguf.display().to_string(),
        server: words,
        banned_tokens: banned,
        plan,
        measurements,
        minutes: started.elapsed().as_secs_f64() / 60.0,
    };
    let raw = work.join("serve-results.json");
    std::fs::write(&raw, serde_json::to_string_pretty(&report)?).with_context(|| raw.display().to_string())?;
    // Last in the file: the sections before it are each followed by their analysis by hand.
    super::report::write_between(&out, BEGIN, END, &report.markdown(), None)?;
    eprintln!("bench --serve: wrote {} and {} in {:.1} min", out.display(), raw.display(), report.minutes);
    print!("{}", report.summary());
    Ok(())
}

/// The server's first line without its prefix and address: "smollm2 on backend flex (CPU),
/// 16 parallel, context 8192".
pub fn server_words(banner: &str) -> String {
    let words = banner.trim().strip_prefix("clex serve: ").unwrap_or(banner.trim());
    words.split("; listening on").next().unwrap_or(words).to_string()
}

/// The `--serve` command as a user would type it again.
fn command_line(args: &BenchArgs) -> String {
    let mut s = String::from("cargo xtask bench --serve");
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(r) = args.runs {
        s.push_str(&format!(" --runs {r}"));
    }
    if let Some(t) = args.threads {
        s.push_str(&format!(" --threads {t}"));
    }
    s
}

impl ServeReport {
    fn of(&self, clients: usize, mode: Mode) -> Vec<&Measurement> {
        self.measurements.iter().filter(|m| m.clients == clients && m.mode == mode).collect()
    }

    fn spread(&self, clients: usize, mode: Mode, f: impl Fn(&Measurement) -> f64) -> Option<Spread> {
        Spread::of(&self.of(clients, mode).into_iter().map(f).collect::<Vec<_>>())
    }

    /// Concurrent tokens/s / sequential tokens/s, run by run (both modes of a run ran back
    /// to back).
    pub fn ratio(&self, clients: usize) -> Option<Spread> {
        let (seq, conc) = (self.of(clients, Mode::Sequential), self.of(clients, Mode::Concurrent));
        let v: Vec<f64> =
            seq.iter().filter_map(|s| Some(conc.iter().find(|c| c.run == s.run)?.tokens_per_s() / s.tokens_per_s())).collect();
        Spread::of(&v)
    }

    /// The generated section, markers included.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let (m, p) = (&self.machine, &self.plan);
        let date = super::machine::utc_now();
        let prompt_tokens: Vec<usize> = self.measurements.iter().flat_map(|m| m.prompt_tokens.iter().copied()).collect();
        let (lo, hi) = (prompt_tokens.iter().min().copied().unwrap_or(0), prompt_tokens.iter().max().copied().unwrap_or(0));
        let _ = writeln!(s, "{BEGIN}");
        let _ = writeln!(s, "## Serving: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Generated {date} in {:.1} min by `{}` ({} run{}, {} threads for the server's burn-flex; tables give the median \
             and, in parentheses, the range over runs).\n",
            self.minutes,
            self.command,
            p.runs,
            if p.runs == 1 { "" } else { "s" },
            p.threads
        );
        let _ = writeln!(
            s,
            "{} 1-minute load average {:.2} at the start and {:.2} at the end. The clients ran on the same machine as \
             the server.\n",
            m.summary(),
            m.load.0,
            m.load.1
        );
        let _ = writeln!(s, "- Server: `clex serve -m {} --parallel {}` (release build): {}.", self.model, p.parallel, self.server);
        let banned: Vec<String> = self.banned_tokens.iter().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "- Requests: `POST /v1/completions` through reqwest, c distinct prompts ({lo}-{hi} tokens), `max_tokens` {}, \
             `temperature` 0, the end-of-sequence tokens ({}) banned with `logit_bias` -100, so every request generates \
             exactly {} tokens. Sequential: one client sends the c requests one after another, each when the previous one \
             is answered. Concurrent: c clients send one request each, all at once. Wall time from the first request sent \
             to the last answer; one warm-up batch of every prompt before the timed requests.",
            p.max_tokens,
            banned.join(", "),
            p.max_tokens
        );
        let _ = writeln!(
            s,
            "- What the ratio means: a batched decode step reads every weight once for all its rows, so while a step is \
             bound by reading the weights (a row is a matrix-vector product) more rows cost little more than one and \
             concurrent tokens/s approaches c times sequential; attention is per row (each row reads its own KV cache), \
             and once the rows' matrix products are bound by arithmetic rather than memory the gain stops growing. \
             Prompts are prefilled a chunk at a time between the decode steps of the running batch. Rows = the most \
             requests one step decoded, from the server's log.\n"
        );
        let _ = writeln!(
            s,
            "| clients | sequential requests/s | sequential tokens/s | concurrent requests/s | concurrent tokens/s | \
             concurrent / sequential | mean latency sequential, s | mean latency concurrent, s | rows |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let show = |x: Option<Spread>, digits: usize| x.map(|x| x.show(digits)).unwrap_or_else(|| "–".into());
        for &c in &p.clients {
            let rows = self.of(c, Mode::Concurrent).iter().filter_map(|m| m.peak_rows).max();
            let _ = writeln!(
                s,
                "| {c} | {} | {} | {} | {} | {} | {} | {} | {} |",
                show(self.spread(c, Mode::Sequential, Measurement::requests_per_s), 3),
                show(self.spread(c, Mode::Sequential, Measurement::tokens_per_s), 1),
                show(self.spread(c, Mode::Concurrent, Measurement::requests_per_s), 3),
                show(self.spread(c, Mode::Concurrent, Measurement::tokens_per_s), 1),
                self.ratio(c).map(|r| format!("{}x", r.show(2))).unwrap_or_else(|| "–".into()),
                show(self.spread(c, Mode::Sequential, Measurement::mean_latency_s), 2),
                show(self.spread(c, Mode::Concurrent, Measurement::mean_latency_s), 2),
                rows.map_or("–".into(), |r| r.to_string())
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{END}");
        s
    }

    /// A line per client count for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for &c in &self.plan.clients {
            let tps = |mode| self.spread(c, mode, Measurement::tokens_per_s).map(|x| x.show(1)).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                s,
                "{c} clients: sequential {} tokens/s, concurrent {} tokens/s, ratio {}",
                tps(Mode::Sequential),
                tps(Mode::Concurrent),
                self.ratio(c).map(|r| r.show(2)).unwrap_or_else(|| "–".into())
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_lines_parse_and_other_lines_do_not() {
        let line = "[clex serve] cmpl-3f2a: length; 47 prompt + 64 generated tokens; batched with up to 16 rows";
        assert_eq!(
            parse_finish_line(line),
            Some(FinishLine { id: "cmpl-3f2a".into(), reason: "length".into(), prompt_tokens: 47, generated_tokens: 64, rows: 16 })
        );
        assert_eq!(parse_finish_line("clex serve: smollm2 on backend flex (CPU); listening on http://127.0.0.1:1"), None);
        assert_eq!(parse_finish_line("[clex serve] cmpl-1: stop; x prompt + 1 generated tokens; batched with up to 1 rows"), None);
    }

    #[test]
    fn prompts_are_distinct_and_deterministic() {
        let p = prompts(20);
        assert_eq!(p, prompts(20));
        let distinct: std::collections::BTreeSet<&String> = p.iter().collect();
        assert_eq!(distinct.len(), 20);
        // ~1.2 SmolLM2 tokens per word: 30-60 tokens is 25-50 words.
        for text in &p {
            let words = text.split_whitespace().count();
            assert!((25..=50).contains(&words), "{words} words: {text}");
        }
    }

    #[test]
    fn banner_loses_prefix_and_address() {
        let b = "clex serve: smollm2 on backend flex (CPU), 16 parallel, context 8192; listening on http://127.0.0.1:40123";
        assert_eq!(server_words(b), "smollm2 on backend flex (CPU), 16 parallel, context 8192");
    }

    fn measurement(clients: usize, mode: Mode, run: usize, wall_s: f64) -> Measurement {
        Measurement {
            clients,
            mode,
            run,
            wall_s,
            prompt_tokens: vec![40; clients],
            generated_tokens: 64 * clients,
            latency_s: vec![wall_s / 2.0; clients],
            peak_rows: Some(clients),
        }
    }

    /// The table's ratio is concurrent over sequential tokens/s, paired run by run.
    #[test]
    fn table_gives_rates_and_the_paired_ratio() {
        let report = ServeReport {
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                simd: "avx2".into(),
                memory_bytes: 1 << 30,
                os: "Linux".into(),
                rustc: "rustc".into(),
                load: (1.0, 1.5),
            },
            command: "cargo xtask bench --serve".into(),
            model: "m.gguf".into(),
            server: "smollm2".into(),
            banned_tokens: vec![2],
            plan: ServePlan { clients: vec![1, 4], max_tokens: 64, runs: 2, threads: 2, parallel: 16 },
            measurements: vec![
                measurement(1, Mode::Sequential, 1, 4.0),
                measurement(1, Mode::Concurrent, 1, 4.0),
                measurement(4, Mode::Sequential, 1, 16.0),
                measurement(4, Mode::Concurrent, 1, 8.0),
                measurement(4, Mode::Concurrent, 2, 4.0),
                measurement(4, Mode::Sequential, 2, 16.0),
            ],
            minutes: 1.0,
        };
        // Run 1: 16 / 8 = 2; run 2: 16 / 4 = 4.
        let r = report.ratio(4).unwrap();
        assert_eq!((r.median, r.min, r.max), (3.0, 2.0, 4.0));
        let md = report.markdown();
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END), "{md}");
        // c = 4: sequential 0.25 requests/s and 16 tokens/s; concurrent 0.5-1 requests/s.
        assert!(md.contains("| 4 | 0.250 | 16.0 | 0.750 (0.500–1.000) | 48.0 (32.0–64.0) | 3.00 (2.00–4.00)x |"), "{md}");
        assert!(md.contains("| 1 | 0.250 | 16.0 | 0.250 | 16.0 | 1.00x |"), "{md}");
    }
}
