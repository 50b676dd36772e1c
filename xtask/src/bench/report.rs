//! BENCHMARKS.md's generated section: the tables of one `cargo xtask bench` run (median and
//! range over runs; ratios taken run by run, since the compared variants ran side by side),
//! the targets of issue 7 checked against them, and the criterion estimates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::machine::Machine;
use super::models::Preset;
use super::results::{InferResult, Spread, TrainResult, median_of};

/// Marks the start of the generated section; everything outside the markers is kept.
pub const BEGIN: &str = "<!-- BEGIN cargo xtask bench: generated, edit outside these markers -->";
/// Marks its end.
pub const END: &str = "<!-- END cargo xtask bench -->";

/// One criterion benchmark.
#[derive(Debug, Clone)]
pub struct CriterionRow {
    /// `group/function/value`.
    pub id: String,
    /// Median and its 95% confidence interval, ns.
    pub median_ns: f64,
    /// Lower bound.
    pub lo_ns: f64,
    /// Upper bound.
    pub hi_ns: f64,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub plan_text: String,
    pub presets: Vec<Preset>,
    pub contexts: Vec<usize>,
    pub threads: usize,
    pub runs: usize,
    /// Read bandwidth with `threads` threads and with one, bytes/s.
    pub bandwidth: f64,
    pub bandwidth_1: f64,
    /// (preset, engine: rope | clex | torch) → one result per run.
    pub infer: BTreeMap<(String, String), Vec<InferResult>>,
    /// preset → per run, [plain, CLEX] decoded in lockstep in one process on shared weights.
    pub pairs: BTreeMap<String, Vec<[InferResult; 2]>>,
    /// Training in lockstep (plain and CLEX twin in one process), one per run.
    pub train: BTreeMap<(String, String), Vec<TrainResult>>,
    /// Training alone (first run only), for peak memory.
    pub train_alone: BTreeMap<(String, String), Vec<TrainResult>>,
    pub criterion: Vec<CriterionRow>,
    pub vs_torch: bool,
    pub minutes: f64,
}

fn show(s: Option<Spread>, digits: usize) -> String {
    s.map(|s| s.show(digits)).unwrap_or_else(|| "–".into())
}

fn show_pct(s: Option<Spread>) -> String {
    s.map(|s| s.show_pct()).unwrap_or_else(|| "–".into())
}

/// Median step time at one context, ms.
fn step_ms(r: &InferResult, context: usize) -> f64 {
    r.decode.iter().find(|d| d.context == context).map(|d| median_of(&d.step_ms)).unwrap_or(f64::NAN)
}

fn next_ms(r: &InferResult, context: usize) -> f64 {
    r.decode.iter().find(|d| d.context == context).map(|d| d.next_ms).unwrap_or(f64::NAN)
}

fn prefill_tps(r: &InferResult) -> f64 {
    r.prefill_tokens as f64 / r.prefill_s
}

fn train_tps(r: &TrainResult) -> f64 {
    r.tokens_per_step as f64 / median_of(&r.step_s)
}

/// CLEX step time / plain step time of the lockstep training runs: per run, the median of
/// the step-by-step ratios; then median and range over runs.
fn train_ratio(rope: &[TrainResult], clex: &[TrainResult]) -> Option<Spread> {
    let per_run: Vec<f64> =
        rope.iter().zip(clex).map(|(r, c)| median_of(&r.step_s.iter().zip(&c.step_s).map(|(a, b)| b / a).collect::<Vec<_>>())).collect();
    Spread::of(&per_run)
}

fn mib(bytes: f64) -> String {
    format!("{:.0}", bytes / (1 << 20) as f64)
}

/// Ratios a/b taken run by run (the runs alternate, so run i of each is a pair).
fn paired(a: &[InferResult], b: &[InferResult], f: impl Fn(&InferResult) -> f64) -> Option<Spread> {
    let v: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
    Spread::of(&v)
}

/// Whether a measured median meets a target.
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Report {
    /// CLEX step time / plain step time at `context` from the lockstep runs: per run, the
    /// median of the step-by-step ratios; then median and range over runs. `next` takes the
    /// step past the context (the t boundary) instead.
    fn overhead(&self, preset: &str, context: usize, next: bool) -> Option<Spread> {
        let ratio = |[a, b]: &[InferResult; 2]| -> Option<f64> {
            let (da, db) = (a.decode.iter().find(|d| d.context == context)?, b.decode.iter().find(|d| d.context == context)?);
            if next {
                return Some(db.next_ms / da.next_ms);
            }
            Some(median_of(&da.step_ms.iter().zip(&db.step_ms).map(|(x, y)| y / x).collect::<Vec<_>>()))
        };
        let per_run: Vec<f64> = self.pairs.get(preset)?.iter().filter_map(ratio).collect();
        Spread::of(&per_run)
    }

    fn runs_of(&self, preset: &str, engine: &str) -> &[InferResult] {
        self.infer.get(&(preset.to_string(), engine.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    fn train_of(&self, preset: &str, engine: &str) -> &[TrainResult] {
        self.train.get(&(preset.to_string(), engine.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// KV bytes one step reads at `context` (keys and values of every layer, f32).
    fn kv_read_bytes(&self, preset: &Preset, context: usize) -> f64 {
        let c = &preset.config;
        let layers = c["num_hidden_layers"].as_f64().unwrap_or(0.0);
        let hidden = c["hidden_size"].as_f64().unwrap_or(0.0);
        let heads = c["num_attention_heads"].as_f64().unwrap_or(1.0);
        let kv_heads = c["num_key_value_heads"].as_f64().unwrap_or(heads);
        2.0 * layers * hidden / heads * kv_heads * context as f64 * 4.0
    }

    /// The generated section, markers included.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let date = super::machine::utc_now();
        let _ = writeln!(s, "{BEGIN}");
        let _ = writeln!(s, "## Whole models: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Generated {date} in {:.1} min by `{}` ({} runs, {} threads for burn-flex and torch; \
             tables give the median and, in parentheses, the range over runs).\n",
            self.minutes, self.command, self.runs, self.threads
        );
        let _ = writeln!(s, "{}", m.summary());
        let _ = writeln!(
            s,
            "1-minute load average {:.2} at the start and {:.2} at the end: above the {} cores means other processes \
             shared the CPU, which widens the ranges; the ratios pair runs taken back to back.\n",
            m.load.0, m.load.1, m.cores
        );
        let _ = writeln!(s, "{}", self.plan_text);

        let _ = writeln!(s, "### Memory bandwidth\n");
        let _ = writeln!(s, "Sum of a 1 GiB buffer of u64 (256 MiB with --quick), best of 5 passes:\n");
        let _ = writeln!(s, "| threads | read GB/s |\n|---|---|");
        let _ = writeln!(s, "| {} | {:.2} |", self.threads, self.bandwidth / 1e9);
        let _ = writeln!(s, "| 1 | {:.2} |\n", self.bandwidth_1 / 1e9);

        self.prefill_table(&mut s);
        for p in &self.presets {
            self.decode_table(&mut s, p);
        }
        self.boundary_table(&mut s);
        self.train_table(&mut s);
        self.memory_table(&mut s);
        self.criterion_table(&mut s);
        self.targets(&mut s);
        let _ = writeln!(s, "{END}");
        s
    }

    fn prefill_table(&self, s: &mut String) {
        let p = self.contexts[0];
        let _ = writeln!(s, "### Prefill: one forward over P = {p} tokens (median of 3 per process), tokens/s\n");
        let torch = if self.vs_torch { " transformers | ours (plain) / transformers |" } else { "" };
        let _ = writeln!(s, "| model | plain RoPE | CLEX | CLEX / plain |{torch}");
        let _ = writeln!(s, "|---|---|---|---|{}", if self.vs_torch { "---|---|" } else { "" });
        for preset in &self.presets {
            let (rope, clex, torch_r) =
                (self.runs_of(preset.name, "rope"), self.runs_of(preset.name, "clex"), self.runs_of(preset.name, "torch"));
            let tps = |r: &[InferResult]| Spread::of(&r.iter().map(prefill_tps).collect::<Vec<_>>());
            let mut row = format!(
                "| {} | {} | {} | {} |",
                preset.name,
                show(tps(rope), 1),
                show(tps(clex), 1),
                show(paired(clex, rope, prefill_tps), 3)
            );
            if self.vs_torch {
                row.push_str(&format!(" {} | {} |", show(tps(torch_r), 1), show(paired(rope, torch_r, prefill_tps), 3)));
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    fn decode_table(&self, s: &mut String, preset: &Preset) {
        let (rope, clex, torch) =
            (self.runs_of(preset.name, "rope"), self.runs_of(preset.name, "clex"), self.runs_of(preset.name, "torch"));
        let weights = rope.first().map(|r| r.decode_weight_bytes as f64).unwrap_or(f64::NAN);
        let _ = writeln!(s, "### Decode `{}`: tokens/s with the cache at each context\n", preset.name);
        let _ = writeln!(
            s,
            "Tokens/s from one process per engine. CLEX overhead = CLEX step time / plain step time − 1, measured with \
             both decoding in lockstep in one process on the same weight tensors (step by step, alternating order; the \
             median of the step ratios). Floor = read bandwidth / bytes a step must read: the weights ({:.1} MB: every \
             matrix, not the input embedding table) and, in the last column, also the KV cache.\n",
            weights / 1e6
        );
        let torch_head = if self.vs_torch { " transformers | ours (plain) / transformers |" } else { "" };
        let _ = writeln!(
            s,
            "| context | plain RoPE | CLEX | CLEX overhead |{torch_head} weights floor | plain / weights floor | \
             plain / (weights + KV) floor |"
        );
        let _ = writeln!(s, "|---|---|---|---|{}---|---|---|", if self.vs_torch { "---|---|" } else { "" });
        for &c in &self.contexts {
            let tps = |r: &[InferResult]| Spread::of(&r.iter().map(|x| 1e3 / step_ms(x, c)).collect::<Vec<_>>());
            let floor = self.bandwidth / weights;
            let floor_kv = self.bandwidth / (weights + self.kv_read_bytes(preset, c));
            let plain = tps(rope).map(|x| x.median).unwrap_or(f64::NAN);
            let mut row = format!(
                "| {} ({}P) | {} | {} | {} |",
                c,
                c / self.contexts[0],
                show(tps(rope), 1),
                show(tps(clex), 1),
                show_pct(self.overhead(preset.name, c, false))
            );
            if self.vs_torch {
                row.push_str(&format!(" {} | {} |", show(tps(torch), 1), show(paired(torch, rope, |x| step_ms(x, c)), 3)));
            }
            row.push_str(&format!(" {:.1} | {:.2} | {:.2} |", floor, plain / floor, plain / floor_kv));
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    fn boundary_table(&self, s: &mut String) {
        let _ = writeln!(s, "### The t boundary: the step from c = kP to kP + 1 tokens\n");
        let _ = writeln!(
            s,
            "For CLEX, t = ceil(N/P) grows by one in this step, so every cached key of every layer is re-rotated once; \
             for plain RoPE it is an ordinary step (same position, same cache). \"Amortised\" spreads the extra time over \
             the P steps until the next boundary.\n"
        );
        let _ = writeln!(
            s,
            "| model | c | CLEX boundary step ms | CLEX ordinary step ms | plain step ms (same position) | \
             CLEX / plain, boundary step (lockstep) | amortised CLEX overhead |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for preset in &self.presets {
            let (rope, clex) = (self.runs_of(preset.name, "rope"), self.runs_of(preset.name, "clex"));
            for &c in &self.contexts {
                let b = Spread::of(&clex.iter().map(|r| next_ms(r, c)).collect::<Vec<_>>());
                let o = Spread::of(&clex.iter().map(|r| step_ms(r, c)).collect::<Vec<_>>());
                let pl = Spread::of(&rope.iter().map(|r| next_ms(r, c)).collect::<Vec<_>>());
                let p = self.contexts[0] as f64;
                let amortised: Vec<f64> = clex.iter().map(|r| 1.0 + (next_ms(r, c) - step_ms(r, c)) / (p * step_ms(r, c))).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} ({}P) | {} | {} | {} | {} | {} |",
                    preset.name,
                    c,
                    c / self.contexts[0],
                    show(b, 2),
                    show(o, 2),
                    show(pl, 2),
                    show(self.overhead(preset.name, c, true), 2),
                    show_pct(Spread::of(&amortised))
                );
            }
        }
        let _ = writeln!(s);
    }

    fn train_table(&self, s: &mut String) {
        if self.train.is_empty() {
            return;
        }
        let _ = writeln!(s, "### Training: tokens/s per step (forward, backward, AdamW)\n");
        let _ = writeln!(
            s,
            "Both models train in lockstep in one process (the CLEX twin starts from the plain model's weight tensors; \
             same batches; alternating which steps first); tokens/s from the median step of each run, the ratio from \
             the step-by-step ratios.\n"
        );
        let _ = writeln!(s, "| model | plain RoPE | CLEX | CLEX step / plain step | t drawn by the CLEX steps |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for preset in &self.presets {
            let (rope, clex) = (self.train_of(preset.name, "rope"), self.train_of(preset.name, "clex"));
            let tps = |r: &[TrainResult]| Spread::of(&r.iter().map(train_tps).collect::<Vec<_>>());
            let ratio = train_ratio(rope, clex);
            let ts: Vec<String> = clex.first().map(|r| r.t.iter().map(|t| t.to_string()).collect()).unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                preset.name,
                show(tps(rope), 1),
                show(tps(clex), 1),
                show_pct(ratio),
                ts.join(", ")
            );
        }
        let _ = writeln!(s);
    }

    fn memory_table(&self, s: &mut String) {
        let _ = writeln!(s, "### Peak memory (VmHWM of each worker process), MiB\n");
        let last = *self.contexts.last().expect("contexts");
        let _ = writeln!(s, "| model | engine | inference (ladder to {last}) | KV cache at {}, MiB | training, alone |", last + 1);
        let _ = writeln!(s, "|---|---|---|---|---|");
        for preset in &self.presets {
            for engine in ["rope", "clex", "torch"] {
                let inf = self.runs_of(preset.name, engine);
                if inf.is_empty() {
                    continue;
                }
                let peak =
                    Spread::of(&inf.iter().map(|r| r.peak_rss_bytes as f64).collect::<Vec<_>>()).map(|x| mib(x.median)).unwrap_or_default();
                let cache =
                    inf.first().and_then(|r| r.cache_bytes).map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64)).unwrap_or("–".into());
                let tr = self.train_alone.get(&(preset.name.to_string(), engine.to_string())).map(Vec::as_slice).unwrap_or(&[]);
                let train = Spread::of(&tr.iter().map(|r| r.peak_rss_bytes as f64).collect::<Vec<_>>())
                    .map(|x| mib(x.median))
                    .unwrap_or("–".into());
                let name = match engine {
                    "rope" => "clex-rs, plain RoPE",
                    "clex" => "clex-rs, CLEX",
                    _ => "transformers, plain RoPE",
                };
                let _ = writeln!(s, "| {} | {name} | {peak} | {cache} | {train} |", preset.name);
            }
        }
        let _ = writeln!(s);
    }

    fn criterion_table(&self, s: &mut String) {
        if self.criterion.is_empty() {
            return;
        }
        let _ = writeln!(s, "### Micro-benchmarks (criterion)\n");
        let _ = writeln!(
            s,
            "`cargo bench -p clex-core --bench rope` and `cargo bench -p clex-models --bench decode` (run by the command \
             above, {} threads): median and 95% confidence interval. `decode_step` uses a 4-layer, width-512 LLaMA \
             (vocab 8192, P = 256{}), the CLEX model on the plain model's own weight tensors.\n",
            self.threads,
            if self.command.contains("--quick") { "; with --quick a 2-layer, width-256 one with P = 64" } else { "" }
        );
        let _ = writeln!(s, "| benchmark | median ms | 95% CI ms |\n|---|---|---|");
        for r in &self.criterion {
            let _ = writeln!(s, "| `{}` | {:.3} | {:.3} – {:.3} |", r.id, r.median_ns / 1e6, r.lo_ns / 1e6, r.hi_ns / 1e6);
        }
        let find = |id: &str| self.criterion.iter().find(|r| r.id == id).map(|r| r.median_ns);
        let mut ratios = Vec::new();
        for f in ["1P", "4P", "8P"] {
            if let (Some(c), Some(r)) = (find(&format!("decode_step/clex/{f}")), find(&format!("decode_step/rope/{f}"))) {
                ratios.push(format!("{f}: {:+.1}%", (c / r - 1.0) * 100.0));
            }
        }
        if !ratios.is_empty() {
            let _ = writeln!(
                s,
                "\nCLEX decode step vs plain RoPE: {} (criterion measures one benchmark after the other, so the machine's \
                 drift shows here; the lockstep columns above are the comparison).",
                ratios.join(", ")
            );
        }
        if let (Some(b), Some(c)) = (find("decode_step/clex_boundary/4P"), find("decode_step/clex/4P")) {
            let _ = writeln!(
                s,
                "The boundary step (4P → 4P + 1, re-rotating every cached key) costs {:.2}x an ordinary CLEX step at 4P.",
                b / c
            );
        }
        let _ = writeln!(s);
    }

    fn targets(&self, s: &mut String) {
        let _ = writeln!(s, "### Targets (issue 7), from the medians above\n");
        let _ = writeln!(s, "| target | model | measured | verdict |\n|---|---|---|---|");
        let c4 = self.contexts[0] * 4;
        let c8 = *self.contexts.last().expect("contexts");
        for p in &self.presets {
            let (rope, torch) = (self.runs_of(p.name, "rope"), self.runs_of(p.name, "torch"));
            let over = |c: usize| self.overhead(p.name, c, false);
            let o4 = over(c4);
            let _ = writeln!(
                s,
                "| CLEX decode overhead at 4P <= 2% | {} | {} | {} |",
                p.name,
                show_pct(o4),
                verdict(o4.map(|o| o.median <= 1.02))
            );
            let (o1, o8) = (over(self.contexts[0]), over(c8));
            let grows = match (o1, o8, rope.first()) {
                (Some(a), Some(b), Some(_)) => {
                    let ms = |c: usize| median_of(&rope.iter().map(|x| step_ms(x, c)).collect::<Vec<_>>());
                    let d1 = (a.median - 1.0) * ms(self.contexts[0]);
                    let d8 = (b.median - 1.0) * ms(c8);
                    Some((format!("CLEX − plain per step: {d1:+.2} ms at 1P, {d8:+.2} ms at 8P"), b.median <= 1.02))
                }
                _ => None,
            };
            let _ = writeln!(
                s,
                "| no per-step CLEX work growing with the cache (overhead at 8P <= 2%) | {} | {} | {} |",
                p.name,
                grows.as_ref().map(|g| g.0.clone()).unwrap_or("–".into()),
                verdict(grows.map(|g| g.1))
            );
            if self.vs_torch {
                let pre = paired(rope, torch, prefill_tps);
                let _ = writeln!(
                    s,
                    "| prefill tokens/s >= transformers | {} | ours / transformers {} | {} |",
                    p.name,
                    show(pre, 3),
                    verdict(pre.map(|x| x.median >= 1.0))
                );
                let worst = self
                    .contexts
                    .iter()
                    .filter_map(|&c| paired(torch, rope, |x| step_ms(x, c)).map(|r| (c, r.median)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let all = self
                    .contexts
                    .iter()
                    .map(|&c| {
                        format!(
                            "{}P {:.2}",
                            c / self.contexts[0],
                            paired(torch, rope, |x| step_ms(x, c)).map(|r| r.median).unwrap_or(f64::NAN)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    s,
                    "| decode tokens/s >= transformers | {} | ours / transformers: {all} | {} |",
                    p.name,
                    verdict(worst.map(|w| w.1 >= 1.0))
                );
            }
            let (tr, tc) = (self.train_of(p.name, "rope"), self.train_of(p.name, "clex"));
            let t = train_ratio(tr, tc);
            if !tr.is_empty() {
                let _ = writeln!(
                    s,
                    "| training step with CLEX (T_max 16) <= 5% slower | {} | {} | {} |",
                    p.name,
                    show_pct(t),
                    verdict(t.map(|x| x.median <= 1.05))
                );
            }
        }
        if !self.vs_torch {
            let _ = writeln!(s, "| decode and prefill >= transformers | all | not run (add --vs-torch) | not measured |");
        }
        let _ = writeln!(s);
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c4 = self.contexts[0] * 4;
        for p in &self.presets {
            let (rope, torch) = (self.runs_of(p.name, "rope"), self.runs_of(p.name, "torch"));
            let _ = write!(s, "{}: CLEX decode overhead at 4P {}", p.name, show_pct(self.overhead(p.name, c4, false)));
            if !torch.is_empty() {
                let _ = write!(
                    s,
                    "; ours/transformers prefill {}, decode at 4P {}",
                    show(paired(rope, torch, prefill_tps), 3),
                    show(paired(torch, rope, |x| step_ms(x, c4)), 3)
                );
            }
            let (tr, tc) = (self.train_of(p.name, "rope"), self.train_of(p.name, "clex"));
            if !tr.is_empty() {
                let t = train_ratio(tr, tc);
                let _ = write!(s, "; CLEX training step {}", show_pct(t));
            }
            let _ = writeln!(s);
        }
        s
    }
}

/// Replaces the generated section of `path` (between [`BEGIN`] and [`END`]), appends it if the
/// file has none, or creates the file.
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    write_between(path, BEGIN, END, section, None)
}

/// Replaces the part of `path` between the markers `begin` and `end` with `section` (which
/// carries the markers itself); without them, inserts it after the line holding `after`
/// where there is one, else appends it; creates the file if there is none.
pub fn write_between(path: &Path, begin: &str, end: &str, section: &str, after: Option<&str>) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if e > b => {
            let rest = old[e + end.len()..].trim_start_matches('\n');
            format!("{}{}{}{}", &old[..b], section, if rest.is_empty() { "" } else { "\n" }, rest)
        }
        _ if old.is_empty() => format!("# Benchmarks\n\n{section}"),
        _ => match after.and_then(|a| old.find(a).map(|i| i + a.len())) {
            Some(i) => {
                let rest = old[i..].trim_start_matches('\n');
                format!("{}\n\n{section}{}{}", &old[..i], if rest.is_empty() { "" } else { "\n" }, rest)
            }
            None => format!("{}\n\n{section}", old.trim_end()),
        },
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new).with_context(|| path.display().to_string())
}

/// Every `new/estimates.json` criterion left under `home`, sorted by id.
pub fn read_criterion(home: &Path) -> anyhow::Result<Vec<CriterionRow>> {
    let mut rows = Vec::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some(row) = criterion_row(&path)? {
                        rows.push(row);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

fn criterion_row(dir: &Path) -> anyhow::Result<Option<CriterionRow>> {
    let read = |name: &str| -> anyhow::Result<Option<Value>> {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&std::fs::read_to_string(&p)?).with_context(|| p.display().to_string())?))
    };
    let (Some(bench), Some(est)) = (read("benchmark.json")?, read("estimates.json")?) else { return Ok(None) };
    let id = bench["full_id"].as_str().unwrap_or("?").to_string();
    let m = &est["median"];
    Ok(Some(CriterionRow {
        id,
        median_ns: m["point_estimate"].as_f64().unwrap_or(f64::NAN),
        lo_ns: m["confidence_interval"]["lower_bound"].as_f64().unwrap_or(f64::NAN),
        hi_ns: m["confidence_interval"]["upper_bound"].as_f64().unwrap_or(f64::NAN),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_section_merge() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        let dir = std::env::temp_dir().join(format!("clex-bench-merge-{}", std::process::id()));
        let path = dir.join("B.md");
        write_section(&path, &format!("{BEGIN}\nfirst\n{END}\n")).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap().replace("# Benchmarks\n\n", "# Benchmarks\n\nhand-written\n\n");
        std::fs::write(&path, format!("{kept}\ntail\n")).unwrap();
        write_section(&path, &format!("{BEGIN}\nsecond\n{END}\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("# Benchmarks\n\nhand-written\n\n{BEGIN}\nsecond\n{END}\n\ntail\n"));
        // A second section goes after the first one's end marker, then is replaced in place,
        // and rewriting the first keeps it.
        let (b2, e2) = ("<!-- BEGIN two -->", "<!-- END two -->");
        write_between(&path, b2, e2, &format!("{b2}\nlong\n{e2}\n"), Some(END)).unwrap();
        write_between(&path, b2, e2, &format!("{b2}\nlonger\n{e2}\n"), Some(END)).unwrap();
        write_section(&path, &format!("{BEGIN}\nthird\n{END}\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("# Benchmarks\n\nhand-written\n\n{BEGIN}\nthird\n{END}\n\n{b2}\nlonger\n{e2}\n\ntail\n"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
