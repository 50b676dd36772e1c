//! The "Long context" section of BENCHMARKS.md (its own generated block, after the whole-model
//! one): the tables of one `cargo xtask bench --long` run and the targets of issue 16
//! checked against them. Ratios are taken run by run (the configurations of a run ran back
//! to back), then the median and range over runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clex_models::ModelSource;

use super::long::{CLEX_FACTOR, LongPlan};
use super::machine::Machine;
use super::results::{LongResult, Outcome, Spread, median_of};

/// Marks the start of the long-context section; everything outside the markers is kept.
pub const BEGIN: &str = "<!-- BEGIN cargo xtask bench --long: generated, edit outside these markers -->";
/// Marks its end.
pub const END: &str = "<!-- END cargo xtask bench --long -->";

/// What the tables need to know about the model.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// Bytes of `model.safetensors` (f32 weights).
    pub weight_bytes: u64,
    /// Bytes of keys and values one token adds to the cache (every layer, f32).
    pub kv_bytes_per_token: u64,
    pub heads: usize,
    pub layers: usize,
    /// P (`max_position_embeddings`), where CLEX's t starts to grow.
    pub p: usize,
}

impl ModelFacts {
    /// Reads the config and the weight file's size of the HF directory `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let source = ModelSource::open(dir)?;
        let c = source.config();
        let weights = dir.join("model.safetensors");
        Ok(ModelFacts {
            weight_bytes: std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0),
            kv_bytes_per_token: (2 * c.num_layers * c.num_kv_heads * c.head_dim * 4) as u64,
            heads: c.num_heads,
            layers: c.num_layers,
            p: c.rope.max_position_embeddings,
        })
    }
}

/// Everything one `--long` run measured.
#[derive(Debug)]
pub struct LongReport {
    pub machine: Machine,
    pub command: String,
    /// The HF directory.
    pub model: String,
    pub facts: ModelFacts,
    pub plan: LongPlan,
    /// Read bandwidth with the plan's threads, bytes/s (the better of the start and the end).
    pub bandwidth: f64,
    /// (context, engine: ours | eager | sdpa) → one outcome per run.
    pub outcomes: BTreeMap<(usize, String), Vec<Outcome<LongResult>>>,
    /// context → per run, [plain, CLEX] in lockstep on shared weights.
    pub pairs: BTreeMap<usize, Vec<Outcome<[LongResult; 2]>>>,
    pub vs_torch: bool,
    pub minutes: f64,
}

fn mib(bytes: f64) -> String {
    format!("{:.0}", bytes / (1u64 << 20) as f64)
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl LongReport {
    fn of(&self, context: usize, engine: &str) -> &[Outcome<LongResult>] {
        self.outcomes.get(&(context, engine.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `f` over the runs that completed: median (range); "out of memory" when none did and
    /// one ran out; "–" when it was not run.
    fn cell(&self, context: usize, engine: &str, digits: usize, f: impl Fn(&LongResult) -> f64) -> String {
        let runs = self.of(context, engine);
        match Spread::of(&runs.iter().filter_map(Outcome::done).map(f).collect::<Vec<_>>()) {
            Some(s) => s.show(digits),
            None => runs.iter().find_map(Outcome::why_not).map(|(what, _)| what.to_string()).unwrap_or("–".into()),
        }
    }

    /// f(ours) / f(other), run by run over the runs where both completed.
    /// transformers eager and sdpa, and ours over each: " a | b | ours/a | ours/b |".
    fn torch_cells(&self, context: usize, digits: usize, f: impl Fn(&LongResult) -> f64 + Copy) -> String {
        format!(
            " {} | {} | {} | {} |",
            self.cell(context, "eager", digits, f),
            self.cell(context, "sdpa", digits, f),
            show(self.ratio(context, "eager", f), 2),
            show(self.ratio(context, "sdpa", f), 2)
        )
    }

    fn ratio(&self, context: usize, other: &str, f: impl Fn(&LongResult) -> f64) -> Option<Spread> {
        let v: Vec<f64> =
            self.of(context, "ours").iter().zip(self.of(context, other)).filter_map(|(a, b)| Some(f(a.done()?) / f(b.done()?))).collect();
        Spread::of(&v)
    }

    /// Bytes one decode step reads at `context`: the weights and the cache, at its mean
    /// length over the steps.
    fn step_bytes(&self, context: usize) -> f64 {
        self.facts.weight_bytes as f64 + self.facts.kv_bytes_per_token as f64 * (context as f64 + self.plan.steps as f64 / 2.0)
    }

    /// Decode tokens/s if a step only had to read its bytes at the measured bandwidth.
    fn floor_tps(&self, context: usize) -> f64 {
        self.bandwidth / self.step_bytes(context)
    }

    /// Ours / the floor, per run.
    fn floor_fraction(&self, context: usize) -> Option<Spread> {
        let v: Vec<f64> =
            self.of(context, "ours").iter().filter_map(Outcome::done).map(|r| r.decode_tps() / self.floor_tps(context)).collect();
        Spread::of(&v)
    }

    /// Whether the first decode step crosses a t boundary for CLEX (ceil grows by one).
    fn crosses_boundary(&self, context: usize) -> bool {
        context.div_ceil(self.facts.p) < (context + 1).div_ceil(self.facts.p)
    }

    /// CLEX step time / plain step time − 1 from the lockstep runs: the median of the step
    /// ratios, plus, where the first step crosses a t boundary (re-rotating every cached
    /// key), that step's extra time spread over the P steps until the next boundary.
    fn clex_overhead(&self, context: usize) -> Option<Spread> {
        let boundary = self.crosses_boundary(context);
        let per_run: Vec<f64> = self
            .pairs
            .get(&context)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(Outcome::done)
            .map(|[plain, clex]| {
                let ratios: Vec<f64> = plain.step_ms.iter().zip(&clex.step_ms).map(|(a, b)| b / a).collect();
                let ordinary = median_of(if boundary && ratios.len() > 1 { &ratios[1..] } else { &ratios });
                let extra = if boundary {
                    let plain_ms = median_of(&plain.step_ms);
                    (clex.step_ms[0] - ordinary * plain.step_ms[0]) / (self.facts.p as f64 * plain_ms)
                } else {
                    0.0
                };
                ordinary + extra
            })
            .collect();
        Spread::of(&per_run)
    }

    /// CLEX prefill time / plain prefill time from the lockstep runs.
    fn clex_prefill_ratio(&self, context: usize) -> Option<Spread> {
        let v: Vec<f64> = self
            .pairs
            .get(&context)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(Outcome::done)
            .map(|[p, c]| c.prefill_s / p.prefill_s)
            .collect();
        Spread::of(&v)
    }

    /// Leading greedy tokens of ours equal to transformers sdpa's (first run of each).
    fn agreement(&self, context: usize) -> String {
        let first = |e: &str| self.of(context, e).iter().find_map(Outcome::done);
        match (first("ours"), first("sdpa")) {
            (Some(a), Some(b)) => {
                let same = a.generated.iter().zip(&b.generated).take_while(|(x, y)| x == y).count();
                format!("{same}/{}", a.generated.len().min(b.generated.len()))
            }
            _ => "–".into(),
        }
    }

    /// The memory bound of the target: weights + KV cache + 1 GiB, bytes (the KV cache as
    /// the run measured it, else as computed).
    fn rss_bound(&self, context: usize, r: &LongResult) -> f64 {
        let kv = r.cache_bytes.map(|b| b as f64).unwrap_or(self.facts.kv_bytes_per_token as f64 * (context + self.plan.steps) as f64);
        self.facts.weight_bytes as f64 + kv + (1u64 << 30) as f64
    }

    /// The generated section, markers included.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let date = super::machine::utc_now();
        let f = &self.facts;
        // Parameters as a worker counted them; else from the f32 weight file.
        let params = self.outcomes.values().flatten().find_map(Outcome::done).map(|r| r.params).unwrap_or(f.weight_bytes / 4);
        let _ = writeln!(s, "{BEGIN}");
        let _ = writeln!(s, "## Long context: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Generated {date} in {:.1} min by `{}` ({} run{}, {} threads for burn-flex and torch; tables give the median \
             and, in parentheses, the range over runs).\n",
            self.minutes,
            self.command,
            self.plan.runs,
            if self.plan.runs == 1 { "" } else { "s" },
            self.plan.threads
        );
        let _ = writeln!(
            s,
            "{} 1-minute load average {:.2} at the start and {:.2} at the end. Read bandwidth ({} threads, the better \
             of a measurement at the start and one at the end): {:.2} GB/s.\n",
            m.summary(),
            m.load.0,
            m.load.1,
            self.plan.threads,
            self.bandwidth / 1e9
        );
        let _ = writeln!(
            s,
            "- Model: SmolLM2-135M-Instruct, real weights, f32 (`{}`: {} layers, {} heads, {:.1} M parameters, {:.0} MB of \
             weights, {:.0} KiB of keys and values per token, P = {}).",
            self.model,
            f.layers,
            f.heads,
            params as f64 / 1e6,
            f.weight_bytes as f64 / 1e6,
            f.kv_bytes_per_token as f64 / 1024.0,
            f.p
        );
        let _ = writeln!(
            s,
            "- Prompt: the first `context` tokens of the bundled corpus (`data/corpus.jsonl.gz`) under SmolLM2's tokenizer. \
             Each configuration in its own process: a warm-up, one prefill of the whole prompt (one `Session::prefill` call; \
             transformers: one forward with `logits_to_keep=1`), then {} greedy decode steps, each timed. Decode tokens/s = \
             1000 / median step ms.",
            self.plan.steps
        );
        let _ = writeln!(
            s,
            "- CLEX: the same weight tensors with a fresh CLEX layer (T_max {CLEX_FACTOR}, P = {}: what `--rope-scaling clex \
             --rope-factor {CLEX_FACTOR}` gives), prefilled and decoded in lockstep with plain RoPE in one process ({} greedy steps \
             in alternating order). Overhead = median of the step-by-step time ratios − 1; where the first step crosses a t \
             boundary (context a multiple of P: every cached key is re-rotated) its extra time is added, spread over the P \
             steps until the next boundary.",
            f.p,
            3 * self.plan.steps
        );
        let _ = writeln!(
            s,
            "- Floor = read bandwidth / bytes a decode step reads (the weights and the KV cache at the mean length over the \
             steps). Out of memory: refused before launch when the estimate (eager: two [heads, c, c] f32 score matrices \
             and a [c, c] mask) exceeds the free memory, or stopped when the process outgrows it.\n"
        );
        self.prefill_table(&mut s);
        self.decode_table(&mut s);
        self.memory_table(&mut s);
        self.dtype_table(&mut s);
        self.why_not_notes(&mut s);
        self.targets(&mut s);
        let _ = writeln!(s, "{END}");
        s
    }

    fn prefill_table(&self, s: &mut String) {
        let _ = writeln!(s, "### Long context: prefill of the whole prompt, tokens/s\n");
        let torch = if self.vs_torch { " transformers eager | transformers sdpa | ours / eager | ours / sdpa |" } else { "" };
        let _ = writeln!(s, "| context | ours |{torch} CLEX / plain prefill time |");
        let _ = writeln!(s, "|---|---|{}---|", if self.vs_torch { "---|---|---|---|" } else { "" });
        for &c in &self.plan.contexts {
            let mut row = format!("| {c} | {} |", self.cell(c, "ours", 1, LongResult::prefill_tps));
            if self.vs_torch {
                row.push_str(&self.torch_cells(c, 1, LongResult::prefill_tps));
            }
            row.push_str(&format!(" {} |", show(self.clex_prefill_ratio(c), 3)));
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    fn decode_table(&self, s: &mut String) {
        let _ = writeln!(s, "### Long context: decode after the prompt, tokens/s\n");
        let torch = if self.vs_torch { " transformers eager | transformers sdpa | ours / eager | ours / sdpa |" } else { "" };
        let agree = if self.vs_torch { " greedy tokens equal to sdpa's |" } else { "" };
        let _ = writeln!(s, "| context | ours |{torch} floor | ours / floor | CLEX overhead |{agree}");
        let _ = writeln!(
            s,
            "|---|---|{}---|---|---|{}",
            if self.vs_torch { "---|---|---|---|" } else { "" },
            if self.vs_torch { "---|" } else { "" }
        );
        for &c in &self.plan.contexts {
            let mut row = format!("| {c} | {} |", self.cell(c, "ours", 2, LongResult::decode_tps));
            if self.vs_torch {
                row.push_str(&self.torch_cells(c, 2, LongResult::decode_tps));
            }
            row.push_str(&format!(
                " {:.1} | {} | {} |",
                self.floor_tps(c),
                show(self.floor_fraction(c), 2),
                show_pct(self.clex_overhead(c))
            ));
            if self.vs_torch {
                row.push_str(&format!(" {} |", self.agreement(c)));
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    /// Ours with f16 and bf16 weights against f32, at the contexts they ran.
    fn dtype_table(&self, s: &mut String) {
        let contexts: Vec<usize> = self.plan.contexts.iter().copied().filter(|&c| !self.of(c, "ours-f16").is_empty()).collect();
        if contexts.is_empty() {
            return;
        }
        let _ = writeln!(s, "### Long context: weight dtype (ours), decode tokens/s and peak MiB\n");
        let _ = writeln!(s, "| context | f32 decode | f16 decode | bf16 decode | f32 peak | f16 peak | bf16 peak |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let peak = |r: &LongResult| r.peak_rss_bytes as f64 / (1u64 << 20) as f64;
        for c in contexts {
            let engines = ["ours", "ours-f16", "ours-bf16"];
            let decode: Vec<String> = engines.iter().map(|e| self.cell(c, e, 2, LongResult::decode_tps)).collect();
            let peaks: Vec<String> = engines.iter().map(|e| self.cell(c, e, 0, peak)).collect();
            let _ = writeln!(s, "| {c} | {} | {} |", decode.join(" | "), peaks.join(" | "));
        }
        let _ = writeln!(s);
    }

    fn memory_table(&self, s: &mut String) {
        let _ = writeln!(s, "### Long context: peak memory (VmHWM of each process), MiB\n");
        let torch = if self.vs_torch { " transformers eager | transformers sdpa |" } else { "" };
        let _ = writeln!(s, "| context | ours | KV cache (ours) | weights + KV + 1 GiB | ours / that |{torch}");
        let _ = writeln!(s, "|---|---|---|---|---|{}", if self.vs_torch { "---|---|" } else { "" });
        let peak = |r: &LongResult| r.peak_rss_bytes as f64 / (1u64 << 20) as f64;
        for &c in &self.plan.contexts {
            let ours: Vec<&LongResult> = self.of(c, "ours").iter().filter_map(Outcome::done).collect();
            let kv = ours.first().and_then(|r| r.cache_bytes).map(|b| mib(b as f64)).unwrap_or("–".into());
            let bound = ours.first().map(|r| mib(self.rss_bound(c, r))).unwrap_or("–".into());
            let frac = Spread::of(&ours.iter().map(|r| r.peak_rss_bytes as f64 / self.rss_bound(c, r)).collect::<Vec<_>>());
            let mut row = format!("| {c} | {} | {kv} | {bound} | {} |", self.cell(c, "ours", 0, peak), show(frac, 2));
            if self.vs_torch {
                row.push_str(&format!(" {} | {} |", self.cell(c, "eager", 0, peak), self.cell(c, "sdpa", 0, peak)));
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    /// Why each configuration that did not run did not, below the tables.
    fn why_not_notes(&self, s: &mut String) {
        let mut notes: Vec<String> = Vec::new();
        for ((c, engine), runs) in &self.outcomes {
            for (i, o) in runs.iter().enumerate() {
                if let Some((what, why)) = o.why_not() {
                    notes.push(format!("- {} at {c}, run {}: {what}: {}", engine_name(engine), i + 1, one_line(why)));
                }
            }
        }
        for (c, runs) in &self.pairs {
            for (i, o) in runs.iter().enumerate() {
                if let Some((what, why)) = o.why_not() {
                    notes.push(format!("- plain + CLEX lockstep at {c}, run {}: {what}: {}", i + 1, one_line(why)));
                }
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(s, "Not measured:\n\n{}\n", notes.join("\n"));
        }
    }

    fn targets(&self, s: &mut String) {
        let _ = writeln!(s, "### Long-context targets (issue 16), from the medians above\n");
        let _ = writeln!(s, "| target | measured | verdict |\n|---|---|---|");
        let contexts = &self.plan.contexts;
        // Every context's value, and whether all that were measured pass (None: none measured,
        // or a context ran out of memory on our side).
        let every = |value: &dyn Fn(usize) -> Option<f64>, ok: &dyn Fn(f64) -> bool, fmt: &dyn Fn(f64) -> String| {
            let mut parts = Vec::new();
            let mut all: Option<bool> = None;
            for &c in contexts {
                match value(c) {
                    Some(v) => {
                        parts.push(format!("{c}: {}", fmt(v)));
                        all = Some(all.unwrap_or(true) && ok(v));
                    }
                    None => {
                        parts.push(format!("{c}: –"));
                        all = all.map(|_| false);
                    }
                }
            }
            (parts.join(", "), all)
        };
        if self.vs_torch {
            let (m, v) =
                every(&|c| self.ratio(c, "sdpa", LongResult::decode_tps).map(|x| x.median), &|x| x >= 1.5, &|x| format!("{x:.2}x"));
            let _ = writeln!(s, "| decode >= 1.5x transformers sdpa at every context | {m} | {} |", verdict(v));
        }
        let (m, v) = every(&|c| self.floor_fraction(c).map(|x| x.median), &|x| x >= 0.6, &|x| format!("{:.0}%", x * 100.0));
        let _ = writeln!(s, "| decode >= 60% of the bandwidth floor at every context | {m} | {} |", verdict(v));
        if self.vs_torch {
            let long: Vec<usize> = contexts.iter().copied().filter(|&c| c >= 8192).collect();
            let mut parts = Vec::new();
            let mut all: Option<bool> = None;
            for &c in &long {
                let r = self.ratio(c, "sdpa", LongResult::prefill_tps).map(|x| x.median);
                parts.push(format!("{c}: {}", r.map(|x| format!("{x:.2}x")).unwrap_or("–".into())));
                all = Some(all.unwrap_or(true) && r.is_some_and(|x| x >= 1.0));
            }
            let _ = writeln!(
                s,
                "| prefill >= 1.0x transformers sdpa at 8k and beyond | {} | {} |",
                if parts.is_empty() { "no context >= 8192 in this run".into() } else { parts.join(", ") },
                verdict(all)
            );
            if let Some(&c0) = contexts.first() {
                let r = self.ratio(c0, "sdpa", LongResult::prefill_tps);
                let _ = writeln!(s, "| prefill at {c0}: the ratio (for the record) | ours / sdpa {} | – |", show(r, 2));
            }
        }
        let (m, v) = every(&|c| self.clex_overhead(c).map(|x| x.median), &|x| x <= 1.01, &|x| format!("{:+.1}%", (x - 1.0) * 100.0));
        let _ = writeln!(s, "| CLEX decode overhead <= 1% at every context (t boundary amortised) | {m} | {} |", verdict(v));
        let rss = |c: usize| {
            let runs: Vec<f64> =
                self.of(c, "ours").iter().filter_map(Outcome::done).map(|r| r.peak_rss_bytes as f64 / self.rss_bound(c, r)).collect();
            Spread::of(&runs).map(|x| x.median)
        };
        let (m, v) = every(&rss, &|x| x <= 1.0, &|x| format!("{x:.2} of the bound"));
        let _ = writeln!(s, "| peak RSS <= weights + KV + 1 GiB at every context | {m} | {} |", verdict(v));
        if contexts.contains(&32768) {
            let done = self.of(32768, "ours").iter().any(|o| o.done().is_some());
            let _ = writeln!(
                s,
                "| a 32k-token prompt prefilled and decoded on this machine | {} | {} |",
                if done { "ran" } else { "did not run" },
                verdict(Some(done))
            );
        }
        let _ = writeln!(s);
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for &c in &self.plan.contexts {
            let _ = write!(
                s,
                "{c}: ours prefill {} tok/s, decode {} tok/s ({} of floor), CLEX overhead {}",
                self.cell(c, "ours", 1, LongResult::prefill_tps),
                self.cell(c, "ours", 2, LongResult::decode_tps),
                show(self.floor_fraction(c), 2),
                show_pct(self.clex_overhead(c))
            );
            if self.vs_torch {
                let _ = write!(
                    s,
                    "; ours/sdpa prefill {}, decode {}",
                    show(self.ratio(c, "sdpa", LongResult::prefill_tps), 2),
                    show(self.ratio(c, "sdpa", LongResult::decode_tps), 2)
                );
            }
            let _ = writeln!(s);
        }
        s
    }
}

fn engine_name(engine: &str) -> &str {
    match engine {
        "ours" => "clex-rs",
        "eager" => "transformers eager",
        "sdpa" => "transformers sdpa",
        e => e,
    }
}

/// An error's lines joined, for a markdown list item.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

fn show(s: Option<Spread>, digits: usize) -> String {
    s.map(|s| s.show(digits)).unwrap_or_else(|| "–".into())
}

fn show_pct(s: Option<Spread>) -> String {
    s.map(|s| s.show_pct()).unwrap_or_else(|| "–".into())
}
