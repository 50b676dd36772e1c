//! The experiment's report, made only from the numbers of the run: tables for stdout,
//! EXTRAPOLATION.md (setup, tables, plot, claims check), extrapolation.svg and
//! extrapolation.json.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clex_eval::eval::{EvalSet, Tally};
use clex_eval::passkey::Cell;
use clex_eval::plot::{Axis, Scale, Series, line_chart, perplexity_svg};
use clex_train::preset::RopeChoice;
use serde_json::{Value, json};

use super::Settings;
use super::stages::{RETRIEVAL, StageOutcome};

/// One evaluation length of one model.
#[derive(Debug, Clone)]
pub struct Point {
    /// Evaluation length N.
    pub len: usize,
    /// Windows of N tokens scored.
    pub windows: usize,
    /// Their NLL, token count and correct predictions.
    pub tally: Tally,
}

/// One evaluated model.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// Stable key (`rope`, `clex`, ...), used by the claims.
    pub key: String,
    /// Row label.
    pub label: String,
    /// How the weights were made.
    pub how: String,
    /// Model directory.
    pub model: PathBuf,
    /// Parameters (CLEX adds its ODE's).
    pub params: usize,
    /// Results per length.
    pub points: Vec<Point>,
    /// The longest windows split by position: (first, end, tally).
    pub by_position: Vec<(usize, usize, Tally)>,
    /// CLEX only: the learned θ(t) (all K frequencies) at the evaluated t.
    pub theta: Option<Vec<(usize, Vec<f32>)>>,
    /// Training length L of the weights.
    pub train_len: usize,
    /// Passkey retrieval, one cell per (length, depth).
    pub passkey: Vec<Cell>,
    /// Wall time of the evaluation.
    pub wall_s: f64,
}

/// Everything the report is made from.
pub struct Report<'a> {
    /// The settings of the run.
    pub settings: &'a Settings,
    /// Workspace root; paths in the report are relative to it.
    pub root: &'a Path,
    /// Training stages and their ropes.
    pub stages: &'a [(StageOutcome, RopeChoice)],
    /// Stage 1's own validation after each checkpoint: (micro-batches, NLL at L, NLL at 4L).
    pub stage1_trend: &'a [(usize, f64, f64)],
    /// Evaluated models.
    pub methods: &'a [Evaluated],
    /// The evaluation text.
    pub eval_set: &'a EvalSet,
    /// Validation documents in all.
    pub eval_documents: usize,
    /// Wall time of the whole command so far.
    pub wall_s: f64,
}

/// A named line of the plot: (legend, points).
type Curve = (String, Vec<(f64, f64)>);

/// A claim of the paper, checked against this run.
struct Claim {
    statement: String,
    holds: Option<bool>,
    detail: String,
}

fn fmt_ppl(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn minutes(s: f64) -> String {
    if s.is_finite() { format!("{:.0} min {:02.0} s", (s / 60.0).floor(), s % 60.0) } else { "n/a".into() }
}

impl Report<'_> {
    /// `p` relative to the workspace root when inside it.
    pub fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.root).unwrap_or(p).display().to_string()
    }

    fn lengths(&self) -> Vec<usize> {
        self.settings.lengths()
    }

    fn method(&self, key: &str) -> Option<&Evaluated> {
        self.methods.iter().find(|m| m.key == key)
    }

    fn ppl(&self, key: &str, len: usize) -> Option<f64> {
        self.method(key)?.points.iter().find(|p| p.len == len).map(|p| p.tally.perplexity())
    }

    /// Rows of `metric` per method and length, formatted.
    fn rows(&self, metric: fn(&Tally) -> String) -> Vec<(String, Vec<String>)> {
        let lengths = self.lengths();
        self.methods
            .iter()
            .map(|m| {
                let cells = lengths
                    .iter()
                    .map(|len| m.points.iter().find(|p| p.len == *len).map(|p| metric(&p.tally)).unwrap_or_else(|| "-".into()))
                    .collect();
                (m.label.clone(), cells)
            })
            .collect()
    }

    fn markdown_table(&self, metric: fn(&Tally) -> String) -> String {
        let lengths = self.lengths();
        let p = self.settings.seq_len;
        let mut s = String::from("| method | weights |");
        for len in &lengths {
            let _ = write!(s, " {len} ({}P) |", len / p);
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---:|".repeat(lengths.len()));
        s.push('\n');
        for ((label, cells), m) in self.rows(metric).into_iter().zip(self.methods) {
            let _ = writeln!(s, "| {label} | {} | {} |", m.how, cells.join(" | "));
        }
        s
    }

    fn plain_table(&self, title: &str, metric: fn(&Tally) -> String) -> String {
        let mut s = format!("{title}\n{:<28}", "method");
        for len in self.lengths() {
            let _ = write!(s, "{len:>10}");
        }
        s.push('\n');
        for (label, cells) in self.rows(metric) {
            let _ = write!(s, "{label:<28}");
            for c in cells {
                let _ = write!(s, "{c:>10}");
            }
            s.push('\n');
        }
        s
    }

    /// The perplexity, accuracy and passkey tables as plain text.
    pub fn stdout_tables(&self) -> String {
        let mut passkey = format!("passkey keys retrieved (all depths)\n{:<28}", "method");
        let lengths = self.passkey_lengths();
        for len in &lengths {
            let _ = write!(passkey, "{len:>10}");
        }
        passkey.push('\n');
        for m in self.methods {
            let _ = write!(passkey, "{:<28}", m.label);
            for &len in &lengths {
                let cell = self.passkey_cell(&m.key, len);
                let _ = write!(passkey, "{cell:>10}");
            }
            passkey.push('\n');
        }
        format!(
            "\n{}\n{}\n{}",
            self.plain_table("perplexity (validation, non-overlapping windows of each length)", |t| fmt_ppl(t.perplexity())),
            self.plain_table("next-token accuracy", |t| format!("{:.4}", t.accuracy())),
            passkey
        )
    }

    /// Methods trained at `train_len` (stage 1 and dynamic NTK count as trained at P).
    fn regime(&self, train_len: usize) -> impl Iterator<Item = &Evaluated> {
        self.methods.iter().filter(move |m| m.train_len == train_len)
    }

    /// Passkey accuracy of `key` at `len` over every depth: (correct, trials).
    fn passkey_at(&self, key: &str, len: usize) -> Option<(usize, usize)> {
        let cells: Vec<&Cell> = self.method(key)?.passkey.iter().filter(|c| c.length == len).collect();
        (!cells.is_empty()).then(|| (cells.iter().map(|c| c.correct()).sum(), cells.iter().map(|c| c.trials.len()).sum()))
    }

    /// [`Self::passkey_at`] as a table cell, "k/n", or "-" where not asked.
    fn passkey_cell(&self, key: &str, len: usize) -> String {
        self.passkey_at(key, len).map(|(k, n)| format!("{k}/{n}")).unwrap_or_else(|| "-".into())
    }

    /// `methods` ranked by PPL at `len`, as "label PPL < label PPL ...", and the best key.
    fn ranking<'m>(&self, methods: impl Iterator<Item = &'m Evaluated>, len: usize) -> Option<(String, String)> {
        let mut ranked: Vec<(&Evaluated, f64)> = methods.filter_map(|m| Some((m, self.ppl(&m.key, len)?))).collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
        let best = ranked.first()?.0.key.clone();
        let list: Vec<String> = ranked.iter().map(|(m, p)| format!("{} {}", m.label, fmt_ppl(*p))).collect();
        Some((best, list.join(" < ")))
    }

    /// The paper's claims in the short regime (L = P): the ones the first version of this
    /// study checked.
    fn short_claims(&self) -> Vec<Claim> {
        let l = self.settings.seq_len;
        let ratio = |key: &str, len: usize| Some((self.ppl(key, l)?, self.ppl(key, len)?));
        let mut out = Vec::new();
        let (holds, detail) = match ratio("rope", 4 * l) {
            Some((a, b)) => {
                (Some(b >= 3.0 * a), format!("RoPE: PPL {} at L = {l}, {} at 4L = {} ({:.2}×).", fmt_ppl(a), fmt_ppl(b), 4 * l, b / a))
            }
            None => (None, "4L was not evaluated.".into()),
        };
        out.push(Claim { statement: "S(a) plain RoPE's PPL at 4L is at least 3× its PPL at L".into(), holds, detail });
        let (holds, detail) = match ratio("clex", 4 * l) {
            Some((a, b)) => (
                Some(b <= 1.05 * a),
                format!("CLEX: PPL {} at L, {} at 4L ({:+.1}%; lower counts as within).", fmt_ppl(a), fmt_ppl(b), (b / a - 1.0) * 100.0),
            ),
            None => (None, "4L was not evaluated.".into()),
        };
        out.push(Claim { statement: "S(b) CLEX's PPL at 4L is within 5% of its PPL at L".into(), holds, detail });
        let (holds, detail) = match self.ranking(self.regime(l), 8 * l) {
            Some((best, list)) if self.method("clex").is_some() => (Some(best == "clex"), format!("At 8L = {}: {list}.", 8 * l)),
            _ => (None, "8L was not evaluated.".into()),
        };
        out.push(Claim { statement: "S(c) CLEX has the lowest PPL of the L = P methods at 8L".into(), holds, detail });
        out
    }

    /// The claims of the long regime (L = 4P, as the released CLEX-16K).
    fn long_claims(&self) -> Vec<Claim> {
        let p = self.settings.seq_len;
        let m = self.settings.long_multiple;
        let l = m * p;
        let mut out = Vec::new();
        let along = |key: &str| -> String {
            [l, 2 * l, 4 * l, 8 * l]
                .iter()
                .filter_map(|&n| Some(format!("{} at {}P", fmt_ppl(self.ppl(key, n)?), n / p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (holds, detail) = match (self.ppl("rope-4P", l), self.ppl("rope-4P", 2 * l)) {
            (Some(a), Some(b)) => (
                Some(b >= 1.05 * a),
                format!("RoPE trained at {l}: PPL {} ({:+.1}% at {}P).", along("rope-4P"), (b / a - 1.0) * 100.0, 2 * m),
            ),
            _ => (None, "RoPE at 4P, or 8P, was not evaluated.".into()),
        };
        out.push(Claim {
            statement: format!("L(a) plain RoPE continued at {m}P degrades beyond it: PPL at {}P ≥ 1.05× its PPL at {m}P", 2 * m),
            holds,
            detail,
        });
        let (holds, detail) = match (self.ppl("clex-4P", l), self.ppl("clex-4P", 2 * l), self.ppl("clex-4P", 4 * l)) {
            (Some(a), Some(b), Some(c)) => (
                Some(b.max(c) <= 1.05 * a),
                format!(
                    "CLEX trained at {l}: PPL {} (worst up to {}P: {:+.1}%; lower counts as within).",
                    along("clex-4P"),
                    4 * m,
                    (b.max(c) / a - 1.0) * 100.0
                ),
            ),
            _ => (None, format!("CLEX at {m}P, or {}P and {}P, was not evaluated.", 2 * m, 4 * m)),
        };
        out.push(Claim {
            statement: format!("L(b) CLEX trained at {m}P stays within 5% of its PPL at {m}P up to {}P", 4 * m),
            holds,
            detail,
        });
        let mut details = Vec::new();
        let mut verdict = Some(true);
        for n in [4 * l, 8 * l] {
            match self.ranking(self.methods.iter(), n) {
                Some((best, list)) if self.method("clex-4P").is_some() => {
                    verdict = verdict.map(|v| v && best == "clex-4P");
                    details.push(format!("At {}P = {n}: {list}.", n / p));
                }
                _ => {
                    verdict = None;
                    details.push(format!("{}P was not evaluated.", n / p));
                }
            }
        }
        out.push(Claim {
            statement: format!("L(c) CLEX trained at {m}P has the lowest PPL of all methods at {}P and {}P", 4 * m, 8 * m),
            holds: verdict,
            detail: details.join(" "),
        });
        let mut details = Vec::new();
        // Accuracy beyond L says something only where retrieval was learned within L.
        let at_l: Vec<Option<(usize, usize)>> = ["clex-4P", "pi-4P", "yarn-4P"].iter().map(|k| self.passkey_at(k, l)).collect();
        let mut verdict = match at_l.as_slice() {
            [Some(c), Some(pi), Some(y)] if c.0 + pi.0 + y.0 == 0 => {
                details.push(format!(
                    "Not testable: at L = {l} itself CLEX {}/{}, PI {}/{}, YaRN {}/{}; none of them learned to retrieve within \
                     its training length, so equal accuracy beyond it says nothing.",
                    c.0, c.1, pi.0, pi.1, y.0, y.1
                ));
                None
            }
            _ => Some(true),
        };
        let mut retrieved_far = 0;
        for n in [8 * l, 16 * l] {
            let acc = |key: &str| self.passkey_at(key, n);
            match (acc("clex-4P"), acc("pi-4P"), acc("yarn-4P")) {
                (Some(c), Some(pi), Some(y)) => {
                    let rate = |(k, t): (usize, usize)| k as f64 / t.max(1) as f64;
                    verdict = verdict.map(|v| v && rate(c) >= rate(pi) && rate(c) >= rate(y));
                    retrieved_far += c.0 + pi.0 + y.0;
                    details.push(format!("At {}x L = {n}: CLEX {}/{}, PI {}/{}, YaRN {}/{}.", n / l, c.0, c.1, pi.0, pi.1, y.0, y.1));
                }
                _ => {
                    verdict = None;
                    details.push(format!("{}x L was not evaluated for all three.", n / l));
                }
            }
        }
        if verdict.is_some() && retrieved_far == 0 {
            // 0 ≥ 0 everywhere would "hold" whatever CLEX does; where the three differ is
            // nearer L, so the detail shows that instead.
            verdict = None;
            let near: Vec<String> = [l, 2 * l, 4 * l]
                .iter()
                .filter_map(|&n| {
                    let cell = |key: &str| self.passkey_at(key, n).map(|(k, t)| format!("{k}/{t}"));
                    Some(format!("{}x L: CLEX {}, PI {}, YaRN {}", n / l, cell("clex-4P")?, cell("pi-4P")?, cell("yarn-4P")?))
                })
                .collect();
            details.insert(
                0,
                format!(
                    "Not testable: none of the three retrieves a single key at 8x or 16x L, so the accuracies there are equal at \
                     zero and say nothing about CLEX. Within 4x L: {}.",
                    near.join("; ")
                ),
            );
        }
        out.push(Claim {
            statement: "L(d) CLEX's passkey accuracy at 8x and 16x L is at least PI's and YaRN's (all trained at 4P)".into(),
            holds: verdict,
            detail: details.join(" "),
        });
        out
    }

    /// The claims of the regimes this run covers.
    fn claims(&self) -> Vec<Claim> {
        let mut out = Vec::new();
        if self.settings.regime.short() {
            out.extend(self.short_claims());
        }
        if self.settings.regime.long() {
            out.extend(self.long_claims());
        }
        out
    }

    fn observations(&self) -> Vec<String> {
        let l = self.settings.seq_len;
        let mut out = Vec::new();
        let best: Vec<String> = self
            .lengths()
            .iter()
            .filter_map(|&len| {
                let (m, p) = self.methods.iter().filter_map(|m| Some((m, self.ppl(&m.key, len)?))).min_by(|a, b| a.1.total_cmp(&b.1))?;
                Some(format!("{len}: {} ({})", m.label, fmt_ppl(p)))
            })
            .collect();
        out.push(format!("Lowest PPL per length: {}.", best.join("; ")));
        let pairs = [
            ("pi", "clex"),
            ("yarn", "clex"),
            ("dynamic-ntk", "clex"),
            ("rope-4P", "clex-4P"),
            ("pi-4P", "clex-4P"),
            ("yarn-4P", "clex-4P"),
            ("clex-4P-lr", "clex-4P"),
            ("clex", "clex-4P"),
        ];
        for (key, against) in pairs {
            let (Some(m), Some(a)) = (self.method(key), self.method(against)) else { continue };
            let wins: Vec<String> = self
                .lengths()
                .iter()
                .filter_map(|&len| {
                    let (p, c) = (self.ppl(key, len)?, self.ppl(against, len)?);
                    (p < c).then(|| format!("{len} ({} vs {})", fmt_ppl(p), fmt_ppl(c)))
                })
                .collect();
            out.push(if wins.is_empty() {
                format!("{} does not beat {} at any evaluated length.", m.label, a.label)
            } else {
                format!("{} beats {} at {}.", m.label, a.label, wins.join(", "))
            });
        }
        for (base_key, train_len) in [("rope", l), ("rope-4P", self.settings.long_multiple * l)] {
            let Some(base) = self.ppl(base_key, train_len) else { continue };
            let costs: Vec<String> = self
                .regime(train_len)
                .filter(|m| m.key != base_key)
                .filter_map(|m| Some(format!("{} {:+.1}%", m.label, (self.ppl(&m.key, train_len)? / base - 1.0) * 100.0)))
                .collect();
            out.push(format!(
                "At the training length L = {train_len}, relative to RoPE continued there ({}): {}.",
                fmt_ppl(base),
                costs.join(", ")
            ));
        }
        let gains: Vec<String> = self
            .lengths()
            .iter()
            .filter_map(|&len| Some(format!("{len}: {:+.1}%", (self.ppl("clex", len)? / self.ppl("dynamic-ntk", len)? - 1.0) * 100.0)))
            .collect();
        if !gains.is_empty() {
            out.push(format!(
                "CLEX against its untrained starting point, dynamic NTK ({}) on the stage-1 weights (PPL change): {}.",
                self.settings.ntk_factor,
                gains.join(", ")
            ));
        }
        out
    }

    /// PPL of `m` on window positions `from..` of the longest windows.
    fn bucket_ppl(m: &Evaluated, from: usize) -> Option<f64> {
        m.by_position.iter().find(|b| b.0 == from).map(|b| b.2.perplexity())
    }

    /// PPL per position bucket of the longest windows, one row per method.
    fn position_table(&self) -> Option<String> {
        let buckets: Vec<(usize, usize)> =
            self.methods.iter().find(|m| !m.by_position.is_empty())?.by_position.iter().map(|b| (b.0, b.1)).collect();
        let len = buckets.last()?.1;
        let mut s = format!("Windows of {len} tokens; a column is the predictions made at those positions of the window.\n\n| method |");
        for (a, b) in &buckets {
            let _ = write!(s, " {a}–{} |", b - 1);
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(buckets.len()));
        s.push('\n');
        for m in self.methods {
            let cells: Vec<String> =
                buckets.iter().map(|(a, _)| Self::bucket_ppl(m, *a).map(fmt_ppl).unwrap_or_else(|| "-".into())).collect();
            let _ = writeln!(s, "| {} | {} |", m.label, cells.join(" | "));
        }
        Some(s)
    }

    /// What the position buckets say: how much context within L helps each model, and how
    /// its loss beyond L compares with its loss just before L.
    fn position_observations(&self) -> Vec<String> {
        let l = self.settings.seq_len;
        let mut out = Vec::new();
        let late = l / 2;
        if !self.stage1_trend.is_empty() {
            let steps: Vec<String> = self
                .stage1_trend
                .iter()
                .map(|(step, at_l, at_4l)| {
                    format!("{step}: {} / {} = ×{:.2}", fmt_ppl(at_l.exp()), fmt_ppl(at_4l.exp()), (at_4l - at_l).exp())
                })
                .collect();
            out.push(format!(
                "Plain RoPE's degradation grows with training: stage 1's own validation after each checkpoint (the \
                 trainer's validation windows, fewer than above), micro-batches: PPL at L / at 4L = ratio: {}.",
                steps.join("; ")
            ));
        }
        let beyond: Vec<String> = self
            .methods
            .iter()
            .filter_map(|m| {
                let last = m.by_position.last()?;
                let base = Self::bucket_ppl(m, late)?;
                let first_beyond = Self::bucket_ppl(m, l)?;
                Some(format!("{} ×{:.2} / ×{:.2}", m.label, first_beyond / base, last.2.perplexity() / base))
            })
            .collect();
        if !beyond.is_empty() {
            let last = self.methods.iter().find_map(|m| m.by_position.last()).map(|b| (b.0, b.1)).unwrap_or((0, 0));
            out.push(format!(
                "Beyond the training length: PPL on positions {l}–{} and on {}–{}, each relative to the same model's PPL \
                 on {late}–{} (every model scores the same tokens at each position, so the ratios compare across \
                 methods; across positions the text itself differs, e.g. document openings fall into the first buckets): {}.",
                2 * l - 1,
                last.0,
                last.1 - 1,
                l - 1,
                beyond.join(", ")
            ));
        }
        out
    }

    /// Passkey prompt lengths of any method, ascending.
    fn passkey_lengths(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.methods.iter().flat_map(|m| m.passkey.iter().map(|c| c.length)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Passkey accuracy per method and length, and by depth beyond each model's L.
    fn passkey_section(&self) -> Option<String> {
        let lengths = self.passkey_lengths();
        if lengths.is_empty() {
            return None;
        }
        let s = self.settings;
        let p = s.seq_len;
        let depths: Vec<String> = s.passkey_depths.iter().map(|d| format!("{d}")).collect();
        let mut md = String::from("## Passkey retrieval\n\n");
        let _ = writeln!(
            md,
            "A five-digit key hidden in repeated filler (`clex passkey`'s prompt) at depths {} of the filler, {} random keys per \
             depth and length (the same keys for every model), answered by greedy decoding through the KV cache; a cell is keys \
             retrieved / asked over all depths. Such prompts of the training length, followed by the answer, were {}% of the \
             training windows of stage 1 and {}% of its retrieval phase and of stage 2, to teach every model the task within its \
             L; each model is asked up to 16x its L (\"-\" beyond).\n",
            depths.join(", "),
            s.passkey_trials,
            s.passkey_fraction.0 * 100.0,
            s.passkey_fraction.1 * 100.0
        );
        md.push_str("| method | L |");
        for len in &lengths {
            let _ = write!(md, " {len} ({}P) |", len / p);
        }
        md.push_str("\n|---|---:|");
        md.push_str(&"---:|".repeat(lengths.len()));
        md.push('\n');
        for m in self.methods {
            let cells: Vec<String> = lengths.iter().map(|&len| self.passkey_cell(&m.key, len)).collect();
            let _ = writeln!(md, "| {} | {} | {} |", m.label, m.train_len, cells.join(" | "));
        }
        md.push_str("\nBy depth, over the lengths beyond each model's L (depth 0: the key opens the prompt; 1: it ends the filler, just before the question):\n\n| method |");
        for d in &depths {
            let _ = write!(md, " {d} |");
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(depths.len()));
        md.push('\n');
        for m in self.methods {
            let cells: Vec<String> = s
                .passkey_depths
                .iter()
                .map(|&d| {
                    let beyond = m.passkey.iter().filter(|c| c.depth == d && c.length > m.train_len);
                    let (k, n) = beyond.fold((0, 0), |(k, n), c| (k + c.correct(), n + c.trials.len()));
                    if n == 0 { "-".into() } else { format!("{k}/{n}") }
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", m.label, cells.join(" | "));
        }
        md.push_str(&self.passkey_within_l());
        md.push_str("\n![Passkey accuracy against prompt length](passkey.svg)\n\n");
        Some(md)
    }

    /// Whether each model learned the task at all: keys retrieved at its own L, and how many
    /// of the keys' digits its answers have in place (chance: one in ten).
    fn passkey_within_l(&self) -> String {
        let mut parts = Vec::new();
        let mut any = false;
        let mut best_digits = 0.0f64;
        for m in self.methods {
            let trials: Vec<&clex_eval::passkey::Trial> =
                m.passkey.iter().filter(|c| c.length == m.train_len).flat_map(|c| &c.trials).collect();
            if trials.is_empty() {
                continue;
            }
            let correct = trials.iter().filter(|t| t.retrieved).count();
            any |= correct > 0;
            let digits: usize = trials.iter().map(|t| clex_eval::passkey::digits_in_place(&t.answer, t.key)).sum();
            let digits = 100.0 * digits as f64 / (5 * trials.len()) as f64;
            best_digits = best_digits.max(digits);
            parts.push(format!("{} {correct}/{} ({digits:.0}% of digits in place)", m.label, trials.len()));
        }
        if parts.is_empty() {
            return String::new();
        }
        let mut md = format!("\nAt each model's own training length: {}.", parts.join(", "));
        if !any {
            let _ = write!(
                md,
                " No model retrieves the key within its training length; at most {best_digits:.0}% of the answers' digits are \
                 in place (chance: 10%), so the models learned the answer's form at best, not the retrieval, and the \
                 accuracies beyond L above say nothing about far context at this scale."
            );
        }
        md.push('\n');
        md
    }

    /// Passkey accuracy against prompt length, one line per method.
    fn passkey_svg(&self) -> anyhow::Result<String> {
        let curves: Vec<(String, Vec<(f64, f64)>)> = self
            .methods
            .iter()
            .map(|m| {
                let pts = self
                    .passkey_lengths()
                    .into_iter()
                    .filter_map(|len| self.passkey_at(&m.key, len).map(|(k, n)| (len as f64, k as f64 / n.max(1) as f64)))
                    .collect();
                (m.label.clone(), pts)
            })
            .collect();
        let series: Vec<Series<'_>> = curves.iter().map(|(n, pts)| Series { name: n, points: pts.clone(), markers: false }).collect();
        Ok(line_chart(
            "Passkey retrieval against prompt length",
            Axis { label: "prompt length (tokens, log scale)", scale: Scale::Log2 },
            Axis { label: "keys retrieved (fraction)", scale: Scale::Linear },
            &series,
        )?)
    }

    /// The learned θ(t) against CLEX's starting point. At initialisation (D = 0) θ(t) is
    /// dynamic NTK with α = 2t − 1: θ_i(t) = θ_i(1)·α^(−2i/(d−2)) (docs/CLEX.md §3.4), which
    /// keeps the highest frequency and divides the lowest by α.
    fn theta_table(&self, key: &str) -> Option<String> {
        let rows = self.method(key)?.theta.as_ref()?;
        let base = &rows.iter().find(|r| r.0 == 1)?.1;
        let k = base.len();
        let picks = [0, k / 2, k - 1];
        let mut s = String::from("θ_i(t) / θ_i(1) for the highest (i = 0), a middle and the lowest frequency: learned (initial).\n\n| t |");
        for i in picks {
            let _ = write!(s, " θ_{i} |");
        }
        s.push_str("\n|---:|");
        s.push_str(&"---:|".repeat(picks.len()));
        s.push('\n');
        for (t, row) in rows {
            let alpha = 2.0 * *t as f64 - 1.0;
            let cells: Vec<String> = picks
                .iter()
                .map(|&i| {
                    let init = alpha.powf(-2.0 * i as f64 / (2.0 * k as f64 - 2.0));
                    format!("{:.3} ({:.3})", row[i] as f64 / base[i] as f64, init)
                })
                .collect();
            let _ = writeln!(s, "| {t} | {} |", cells.join(" | "));
        }
        Some(s)
    }

    fn setup(&self) -> String {
        let s = self.settings;
        let l = s.seq_len;
        let stage1 = &self.stages[0].0;
        let params = self.method("rope-stage1").map(|m| m.params).unwrap_or(0);
        let clex_params = self.method("clex").or(self.method("clex-4P")).map(|m| m.params.saturating_sub(params)).unwrap_or(0);
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.into());
        let region = self.eval_set.region_len;
        let regions = self.eval_set.regions.len();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "- **Model**: tiny LLaMA (`Preset::Tiny`): 4 layers, width 128, 4 heads (2 KV), head_dim 32, vocab 2048, \
             {params} parameters (CLEX adds {clex_params}); P = max_position_embeddings = {l}; stage 1 trains at P, stage 2 \
             at L = P (short regime) or L = {}P (long regime).",
            s.long_multiple
        );
        let _ = writeln!(
            out,
            "- **Data**: the bundled corpus (`data/corpus.jsonl.gz`{}), fixed document-level split; byte-level BPE (2048 \
             entries) trained on the train split in stage 1 and used by every model: {} train tokens, {} validation tokens.",
            if s.quick { "; quick mode: every validation document and every 8th train document" } else { "" },
            stage1.tokens.0,
            stage1.tokens.1
        );
        let _ = writeln!(
            out,
            "- **Stage 1**: plain RoPE from scratch, {} micro-batches of {} × {l} tokens ({:.1} M tokens), AdamW, peak LR {}, \
             5% warmup, cosine to 10%, per-tensor gradient clip 1.0, seed {}.",
            stage1.steps,
            s.batch_size,
            (stage1.steps * s.batch_size * l) as f64 / 1e6,
            s.lr.0,
            s.seed.0
        );
        let retrieval = self.stages.iter().find(|(st, _)| st.name == RETRIEVAL).map_or(s.retrieval_steps, |(st, _)| st.steps);
        let _ = writeln!(
            out,
            "- **Retrieval phase** (the end of stage 1): plain RoPE at P from the stage-1 weights, {retrieval} micro-batches of \
             {} × {l}, {}% of them passkey documents (below), peak LR {}, seed {}. Without this phase, with passkey documents at 10% of \
             both stages' windows, no model learned to retrieve (an earlier full run, 2026-12-01: 0/20 at every model's own \
             L); probes from the stage-1 weights showed the task is learned at P first and then kept at 4P, not learned at 4P directly.",
            s.batch_size,
            s.passkey_fraction.1 * 100.0,
            s.lr.1,
            s.retrieval_seed
        );
        let _ = writeln!(
            out,
            "- **Stage 2**: from the weights at the end of the retrieval phase, each run {} micro-batches of {} tokens (batch × length), peak LR {}, seed {} \
             (the same data order for every run of a regime; another seed than stage 1 so the runs do not replay stage 1's first \
             batches). CLEX always: T_max = {}, tanh, a fresh CLEX layer, which at step 0 is exactly dynamic NTK with α = 2t − 1; \
             t ~ U{{1..{}}} and sampled positions over [0, t·P) per step (docs/CLEX.md §5.2).",
            s.steps.1,
            s.batch_size * l,
            s.lr.1,
            s.seed.1,
            s.max_factor,
            s.max_factor,
        );
        if s.regime.short() {
            let _ = writeln!(
                out,
                "  - *Short regime*, L = P = {l} ({} × {l} per micro-batch): plain RoPE continued; PI (linear, factor {}); YaRN \
                 (factor {}); CLEX.",
                s.batch_size, s.pi_factor, s.yarn_factor
            );
        }
        if s.regime.long() {
            let m = s.long_multiple;
            let _ = writeln!(
                out,
                "  - *Long regime*, L = {m}P = {} ({} × {} per micro-batch), as the released CLEX-LLaMA-2-7B-16K (L = 16k, P = 4k): \
                 plain RoPE continued at {m}P; PI (linear, factor {}, the paper's PI-16K); YaRN (factor {}) trained at {m}P; CLEX; \
                 and CLEX with its ODE (U, D) at {}× the model's peak LR (`--clex-lr`; the reference trains them in one group).",
                m * l,
                (s.batch_size / m).max(1),
                m * l,
                s.pi_factor,
                s.long_yarn_factor,
                s.clex_lr_ratio
            );
        }
        let _ = writeln!(
            out,
            "- **Retrieval data**: {}% of the training windows of stage 1 and {}% of the retrieval phase and of stage 2 are \
             synthetic passkey documents (`PasskeyTask::training_window`: a prompt of the training length in `clex passkey`'s \
             format, the key in 10000..99999 and its depth uniform, followed by the answer), generated deterministically from \
             the seed and added to the corpus's windows; validation and perplexity use the corpus only.",
            s.passkey_fraction.0 * 100.0,
            s.passkey_fraction.1 * 100.0
        );
        let _ = writeln!(
            out,
            "- **No training**: dynamic NTK with factor {} on the stage-1 weights (after the retrieval phase). Factor 2 is the one whose trajectory CLEX \
             starts from: HF's dynamic NTK uses α = F·N/P − (F − 1), which for F = 2 at N = t·P is α = 2t − 1, CLEX's θ(t) \
             at initialisation (docs/CLEX.md §3.4). So this row is CLEX before its stage-2 training, and the CLEX row shows \
             what that training added.",
            s.ntk_factor
        );
        let _ = writeln!(
            out,
            "- **Evaluation**: validation documents of at least {region} tokens ({} of {}), each tokenised with BOS first; \
             {regions} regions of {region} tokens taken round-robin over those documents; at every length N each region is \
             cut into non-overlapping windows of N tokens, so every length and every model scores the same {} tokens \
             ({} predictions per length: all but each window's first token). One forward per window at inference \
             semantics (integer positions, CLEX t = ceil(N/P), dynamic NTK at N). PPL = exp(mean NLL over all predicted \
             tokens); accuracy = argmax = next token.",
            self.eval_set.documents,
            self.eval_documents,
            regions * region,
            regions * region - regions * region / l,
        );
        let train_s: f64 = self.stages.iter().map(|(st, _)| st.wall_s).sum();
        let eval_s: f64 = self.methods.iter().map(|m| m.wall_s).sum();
        let _ = writeln!(
            out,
            "- **Machine**: {nproc} CPU cores ({cpu}), backend {}. Wall time: training {} (the stages below, each as \
             measured by the run that trained it, on the threads it had: stages trained side by side in separate \
             processes count separately) + evaluation {} = {}; this invocation took {}.\n",
            clex_models::backend::name(),
            minutes(train_s),
            minutes(eval_s),
            minutes(train_s + eval_s),
            minutes(self.wall_s)
        );
        out.push_str(
            "| stage | rope | length × batch | micro-batches | threads | wall time | status |\n|---|---|---|---:|---:|---:|---|\n",
        );
        for (st, rope) in self.stages {
            let _ = writeln!(
                out,
                "| {} | {} | {} × {} | {} | {} | {} | {} |",
                st.name,
                rope_name(rope),
                st.seq_len,
                st.batch_size,
                st.steps,
                if st.threads == 0 { "-".to_string() } else { st.threads.to_string() },
                minutes(st.wall_s),
                st.status
            );
        }
        let _ = writeln!(
            out,
            "| evaluation | {} models × {} lengths | | | - | {} | summed over the models, each as measured by the run that scored it |",
            self.methods.len(),
            self.lengths().len(),
            minutes(eval_s)
        );
        out
    }

    fn markdown(&self) -> String {
        let s = self.settings;
        let mut md = String::from("# Length extrapolation at small scale: CLEX against RoPE, PI, YaRN and dynamic NTK\n\n");
        let _ = writeln!(
            md,
            "*Generated by `cargo xtask experiment{}`; every number below comes from that run. Rerunning the command \
             regenerates this file, [extrapolation.svg](extrapolation.svg) and [extrapolation.json](extrapolation.json).*\n",
            if s.quick { " --quick" } else { "" }
        );
        if s.quick {
            md.push_str(
                "> **Quick mode.** A smoke test with tiny step counts and few evaluation windows: the models are barely \
                 trained and the numbers say nothing about the method.\n\n",
            );
        }
        md.push_str(
            "The CLEX paper's headline: a model trained at 4k with CLEX keeps its perplexity up to 16k, while LLaMA-2 \
             without scaling explodes beyond its training length and PI / YaRN need training at the longer length. \
             This is the same comparison on a tiny model and the bundled corpus with P = 128, in two regimes: trained at L = P, \
             and trained at L = 4P as the released CLEX-16K was (s = L/P = 4, so every t ≤ 4 trains on dense positions); \
             evaluated up to ",
        );
        let _ = write!(
            md,
            "{}P, by perplexity and by passkey retrieval (which shows whether a model uses far context at all).\n\n## Setup\n\n",
            s.multiples.iter().max().copied().unwrap_or(1)
        );
        md.push_str(&self.setup());
        md.push_str("\n## Perplexity\n\n");
        md.push_str(&self.markdown_table(|t| fmt_ppl(t.perplexity())));
        md.push_str("\n## Next-token accuracy\n\n");
        md.push_str(&self.markdown_table(|t| format!("{:.4}", t.accuracy())));
        let (curves, cap) = self.plot_series();
        md.push_str("\n## Plot\n\n![Perplexity against evaluation length](extrapolation.svg)\n\nLog-scale length axis.");
        if curves.iter().any(|(_, pts)| pts.iter().any(|p| p.1 >= cap)) {
            let _ = write!(
                md,
                " The perplexity axis stops at {} (3× the highest PPL at L); curves that go higher are drawn along the top \
                 edge, and their legend gives their maximum.",
                fmt_ppl(cap)
            );
        }
        md.push_str("\n\n");
        if let Some(table) = self.position_table() {
            md.push_str("## Where in the window the loss comes from\n\n");
            md.push_str(&table);
            md.push('\n');
            for o in self.position_observations() {
                let _ = writeln!(md, "- {o}");
            }
            md.push('\n');
        }
        let thetas: Vec<(String, String)> =
            self.methods.iter().filter_map(|m| Some((m.label.clone(), self.theta_table(&m.key)?))).collect();
        if !thetas.is_empty() {
            md.push_str("## What CLEX learned\n\n");
            for (label, table) in thetas {
                let _ = writeln!(md, "**{label}.** {table}");
            }
            md.push_str(
                "At L = P the training positions for t > 1 are L sorted random points of [0, t·P) (docs/CLEX.md §5.2), so \
                 neighbouring tokens are on average t positions apart and only about one pair in t is 1 apart; a frequency whose phase \
                 over such gaps is noise is pushed down by the loss. At L = 4P the mean gap is t/4: every t ≤ 4 trains on dense \
                 (interpolated) positions and only t > 4 on sparse ones. Inference at N = t·P uses dense integer positions with the \
                 same θ(t).\n\n",
            );
        }
        if let Some(section) = self.passkey_section() {
            md.push_str(&section);
        }
        md.push_str("## Claims check\n\n");
        for c in self.claims() {
            let verdict = match c.holds {
                Some(true) => "**holds**",
                Some(false) => "**does not hold**",
                None => "**not checked**",
            };
            let _ = writeln!(md, "- {}: {verdict}. {}", c.statement, c.detail);
        }
        md.push_str("\nOther observations:\n\n");
        for o in self.observations() {
            let _ = writeln!(md, "- {o}");
        }
        md.push_str("\n## Raw data\n\n[extrapolation.json](extrapolation.json): settings, stages, and per model and length the windows, scored tokens, summed NLL, correct predictions, PPL and accuracy; per passkey cell the keys and the answers decoded. The evaluations are also kept under `runs/experiment/eval/` and reused while models and settings are unchanged.\n");
        md
    }

    /// Series for the plot, with PPL clamped at a cap so flat curves stay readable.
    fn plot_series(&self) -> (Vec<Curve>, f64) {
        let l = self.settings.seq_len;
        let at_l = self.methods.iter().filter_map(|m| self.ppl(&m.key, l)).fold(0.0f64, f64::max);
        let cap = if at_l > 0.0 { 3.0 * at_l } else { f64::INFINITY };
        let series = self
            .methods
            .iter()
            .map(|m| {
                let pts: Vec<(f64, f64)> = m.points.iter().map(|p| (p.len as f64, p.tally.perplexity())).collect();
                let max = pts.iter().map(|p| p.1).fold(0.0f64, f64::max);
                let name = if max > cap { format!("{} (max {})", m.label, fmt_ppl(max)) } else { m.label.clone() };
                (name, pts.into_iter().map(|(x, y)| (x, y.min(cap))).collect())
            })
            .collect();
        (series, cap)
    }

    fn svg(&self) -> anyhow::Result<String> {
        let (series, _) = self.plot_series();
        let series: Vec<Series<'_>> = series.iter().map(|(n, p)| Series { name: n, points: p.clone(), markers: false }).collect();
        let title = format!("Validation perplexity against evaluation length (L = {})", self.settings.seq_len);
        Ok(perplexity_svg(&title, &series)?)
    }

    fn json(&self) -> Value {
        let s = self.settings;
        json!({
            "mode": if s.quick { "quick" } else { "full" },
            "settings": {
                "seq_len": s.seq_len, "batch_size": s.batch_size, "stage1_steps": s.steps.0, "stage2_steps": s.steps.1,
                "stage1_lr": s.lr.0, "stage2_lr": s.lr.1, "stage1_seed": s.seed.0, "stage2_seed": s.seed.1,
                "clex_max_factor": s.max_factor, "pi_factor": s.pi_factor, "yarn_factor": s.yarn_factor,
                "dynamic_ntk_factor": s.ntk_factor, "lengths": s.lengths(), "regions": self.eval_set.regions.len(),
                "region_tokens": self.eval_set.region_len, "eval_documents": self.eval_set.documents,
                "regime": format!("{:?}", s.regime).to_lowercase(), "long_multiple": s.long_multiple,
                "long_yarn_factor": s.long_yarn_factor, "clex_lr_ratio": s.clex_lr_ratio,
                "passkey_fraction_stage1": s.passkey_fraction.0,
                "passkey_fraction_retrieval_and_stage2": s.passkey_fraction.1, "retrieval_steps": s.retrieval_steps,
                "retrieval_seed": s.retrieval_seed, "passkey_depths": s.passkey_depths,
                "passkey_trials": s.passkey_trials,
            },
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "backend": clex_models::backend::name(),
            },
            "wall_s": self.wall_s,
            "stages": self.stages.iter().map(|(st, rope)| json!({
                "name": st.name, "rope": rope_name(rope), "seq_len": st.seq_len, "batch_size": st.batch_size,
                "steps": st.steps, "wall_s": st.wall_s, "threads": st.threads, "status": st.status,
                "train_tokens": st.tokens.0, "valid_tokens": st.tokens.1,
            })).collect::<Vec<_>>(),
            "methods": self.methods.iter().map(|m| json!({
                "key": m.key, "label": m.label, "weights": m.how, "model": self.rel(&m.model), "params": m.params,
                "eval_wall_s": m.wall_s,
                "results": m.points.iter().map(|p| json!({
                    "length": p.len, "windows": p.windows, "tokens": p.tally.count, "nll_sum": p.tally.nll,
                    "correct": p.tally.correct, "mean_nll": p.tally.mean_nll(), "perplexity": p.tally.perplexity(),
                    "accuracy": p.tally.accuracy(),
                })).collect::<Vec<_>>(),
                "train_len": m.train_len,
                "passkey": m.passkey.iter().map(|c| json!({
                    "length": c.length, "depth": c.depth, "correct": c.correct(), "trials": c.trials.len(),
                    "keys": c.trials.iter().map(|t| t.key).collect::<Vec<_>>(),
                    "answers": c.trials.iter().map(|t| t.answer.clone()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "theta": m.theta.as_ref().map(|rows| rows.iter().map(|(t, r)| json!({"t": t, "theta": r})).collect::<Vec<_>>()),
                "by_position": m.by_position.iter().map(|(a, b, t)| json!({
                    "from": a, "to": b, "tokens": t.count, "nll_sum": t.nll, "correct": t.correct,
                    "perplexity": t.perplexity(), "accuracy": t.accuracy(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "claims": self.claims().iter().map(|c| json!({"claim": c.statement, "holds": c.holds, "detail": c.detail})).collect::<Vec<_>>(),
        })
    }

    /// Writes EXTRAPOLATION.md, extrapolation.svg and extrapolation.json into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let files = [
            (dir.join("EXTRAPOLATION.md"), self.markdown()),
            (dir.join("extrapolation.svg"), self.svg()?),
            (dir.join("extrapolation.json"), serde_json::to_string_pretty(&self.json())? + "\n"),
            (dir.join("passkey.svg"), self.passkey_svg()?),
        ];
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let mut written = Vec::new();
        for (path, text) in files {
            clex_models::write_atomic(&path, text.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }
}

pub(super) fn rope_name(r: &RopeChoice) -> String {
    match r {
        RopeChoice::None => "RoPE".into(),
        RopeChoice::Linear(f) => format!("PI (linear {f})"),
        RopeChoice::Dynamic(f) => format!("dynamic NTK ({f})"),
        RopeChoice::Yarn(f) => format!("YaRN ({f})"),
        RopeChoice::Clex { max_factor } => format!("CLEX (T_max {max_factor})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            quick: false,
            seq_len: 128,
            batch_size: 8,
            steps: (10, 5),
            lr: (3e-3, 1e-3),
            seed: (42, 43),
            retrieval_steps: 5,
            retrieval_seed: 44,
            max_factor: 16,
            pi_factor: 4.0,
            yarn_factor: 8.0,
            ntk_factor: 2.0,
            multiples: vec![1, 2, 4, 8],
            regions: 1,
            batch_tokens: 4096,
            regime: crate::experiment::Regime::Both,
            long_multiple: 4,
            long_yarn_factor: 16.0,
            clex_lr_ratio: 0.1,
            passkey_fraction: (0.1, 0.5),
            passkey_multiples: vec![1, 2, 4, 8],
            passkey_depths: vec![0.0, 1.0],
            passkey_trials: 2,
            data: PathBuf::from("corpus.jsonl"),
        }
    }

    /// A method whose PPL at 128·m is `ppl[i]` (1000 tokens each).
    fn method(key: &str, ppl: &[f64]) -> Evaluated {
        let points = ppl
            .iter()
            .zip([1, 2, 4, 8])
            .map(|(p, m)| Point { len: 128 * m, windows: 1, tally: Tally { nll: p.ln() * 1000.0, count: 1000, correct: 100 } })
            .collect();
        Evaluated {
            key: key.into(),
            label: key.to_uppercase(),
            how: "test".into(),
            model: "/root/x".into(),
            params: 1,
            points,
            by_position: Vec::new(),
            theta: None,
            train_len: 128,
            passkey: Vec::new(),
            wall_s: 1.0,
        }
    }

    fn report_of<'a>(s: &'a Settings, methods: &'a [Evaluated], set: &'a EvalSet, stages: &'a [(StageOutcome, RopeChoice)]) -> Report<'a> {
        Report { settings: s, root: Path::new("/root"), stages, stage1_trend: &[], methods, eval_set: set, eval_documents: 3, wall_s: 60.0 }
    }

    #[test]
    fn position_buckets_are_tabled_and_compared() {
        let s = settings();
        let set = EvalSet { regions: vec![vec![0; 1024]], region_len: 1024, documents: 1 };
        let t = |ppl: f64| Tally { nll: ppl.ln() * 100.0, count: 100, correct: 10 };
        let mut rope = method("rope", &[50.0, 80.0, 200.0, 900.0]);
        rope.by_position = vec![
            (0, 16, t(100.0)),
            (16, 32, t(80.0)),
            (32, 64, t(60.0)),
            (64, 128, t(50.0)),
            (128, 256, t(75.0)),
            (256, 512, t(150.0)),
            (512, 1024, t(400.0)),
        ];
        let methods = [rope, method("clex", &[52.0, 51.0, 53.0, 55.0])];
        let r = report_of(&s, &methods, &set, &[]);
        let table = r.position_table().unwrap();
        assert!(table.contains("| method | 0–15 | 16–31 | 32–63 | 64–127 | 128–255 | 256–511 | 512–1023 |"), "{table}");
        assert!(table.contains("| ROPE | 100.00 | 80.00 | 60.00 | 50.00 | 75.00 | 150.00 | 400.00 |"), "{table}");
        assert!(table.contains("| CLEX | - | - |"), "{table}");
        assert!(r.theta_table("clex").is_none());
        let mut clex = method("clex", &[52.0, 51.0, 53.0, 55.0]);
        clex.theta = Some(vec![(1, vec![1.0, 0.1, 0.01]), (2, vec![0.5, 0.1, 0.002])]);
        let with_theta = [clex];
        let table = report_of(&s, &with_theta, &set, &[]).theta_table("clex").unwrap();
        // d = 6: init ratios at t = 2 (α = 3) are 1, 3^(-1/2), 3^(-1).
        assert!(table.contains("| 2 | 0.500 (1.000) | 1.000 (0.577) | 0.200 (0.333) |"), "{table}");
        let obs = r.position_observations().join("\n");
        assert!(obs.contains("on positions 128–255 and on 512–1023") && obs.contains("ROPE ×1.50 / ×8.00"), "{obs}");
    }

    #[test]
    fn claims_follow_the_numbers() {
        let s = settings();
        let set = EvalSet { regions: vec![vec![0; 1024]], region_len: 1024, documents: 1 };
        let stage = StageOutcome {
            name: "stage1".into(),
            seq_len: 128,
            batch_size: 8,
            steps: 10,
            wall_s: 5.0,
            status: "trained",
            tokens: (1, 1),
            threads: 2,
            fingerprint: String::new(),
        };
        let stages = [(stage, RopeChoice::None)];
        let methods = [
            method("rope", &[50.0, 80.0, 200.0, 900.0]),
            method("pi", &[55.0, 52.0, 51.0, 60.0]),
            method("clex", &[52.0, 51.0, 53.0, 55.0]),
        ];
        let r = report_of(&s, &methods, &set, &stages);
        let verdicts: Vec<Option<bool>> = r.claims().iter().map(|c| c.holds).collect();
        // The long regime's four claims have no models here: not checked, not failed.
        assert_eq!(verdicts, [Some(true), Some(true), Some(true), None, None, None, None]);
        let obs = r.observations().join("\n");
        assert!(obs.contains("PI beats CLEX at 512 (51.00 vs 53.00)."), "{obs}");

        let methods = [
            method("rope", &[50.0, 60.0, 100.0, 300.0]),
            method("pi", &[55.0, 52.0, 51.0, 50.0]),
            method("clex", &[50.0, 51.0, 60.0, 70.0]),
        ];
        let r = report_of(&s, &methods, &set, &stages);
        let verdicts: Vec<Option<bool>> = r.claims().iter().map(|c| c.holds).collect();
        assert_eq!(verdicts[..3], [Some(false), Some(false), Some(false)]);
        // RoPE's 300 is above the plot's cap of 3 × 55 and is clamped there, named with its maximum.
        let (curves, cap) = r.plot_series();
        assert!((cap - 165.0).abs() < 1e-9, "{cap}");
        assert!(curves[0].0.contains("max 300.00") && curves[0].1[3].1 == cap, "{curves:?}");
        let md = r.markdown();
        assert!(md.contains("| ROPE | test | 50.00 | 60.00 | 100.00 | 300.00 |"), "{md}");
        assert!(md.contains("**does not hold**") && !md.contains("/root/"), "{md}");
        assert_eq!(r.json()["methods"][0]["model"], "x");
    }

    /// A model trained at `train_len` with PPL `ppl[i]` at 128·2^i and `keys[i]` of 4 passkey
    /// keys retrieved at 128·2^i (none where `keys` is shorter).
    fn trained(key: &str, train_len: usize, ppl: &[f64], keys: &[usize]) -> Evaluated {
        let mut m = method(key, &[]);
        m.train_len = train_len;
        m.points = ppl
            .iter()
            .enumerate()
            .map(|(i, p)| Point { len: 128 << i, windows: 1, tally: Tally { nll: p.ln() * 1000.0, count: 1000, correct: 100 } })
            .collect();
        m.passkey = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| Cell {
                length: 128 << i,
                depth: 0.5,
                trials: (0..4)
                    .map(|j| clex_eval::passkey::Trial {
                        key: 10000 + j,
                        prompt_tokens: 128 << i,
                        needle_at: Some(1),
                        needle_tokens: 9,
                        answer: String::new(),
                        retrieved: (j as usize) < k,
                    })
                    .collect(),
            })
            .collect();
        m
    }

    #[test]
    fn long_regime_claims_follow_the_numbers() {
        let mut s = settings();
        s.multiples = vec![1, 2, 4, 8, 16, 32];
        s.passkey_depths = vec![0.5];
        let set = EvalSet { regions: vec![vec![0; 4096]], region_len: 4096, documents: 1 };
        // Lengths 128..4096 (P..32P); passkey 128..8192 (8x and 16x L = 4096 and 8192 are the 6th and 7th).
        let good = |key: &str| trained(key, 512, &[60.0, 55.0, 50.0, 51.0, 52.0, 53.0], &[4, 4, 4, 4, 4, 3, 2]);
        let methods = [
            trained("rope-4P", 512, &[60.0, 55.0, 50.0, 90.0, 300.0, 900.0], &[4, 4, 4, 0, 0, 0, 0]),
            trained("pi-4P", 512, &[62.0, 56.0, 51.0, 70.0, 200.0, 500.0], &[4, 4, 4, 1, 0, 1, 2]),
            trained("yarn-4P", 512, &[61.0, 56.0, 51.0, 52.0, 58.0, 70.0], &[4, 4, 4, 4, 2, 3, 1]),
            good("clex-4P"),
        ];
        let r = report_of(&s, &methods, &set, &[]);
        let claims = r.long_claims();
        let verdicts: Vec<Option<bool>> = claims.iter().map(|c| c.holds).collect();
        assert_eq!(
            verdicts,
            [Some(true), Some(true), Some(true), Some(true)],
            "{:?}",
            claims.iter().map(|c| &c.detail).collect::<Vec<_>>()
        );
        assert!(claims[3].detail.contains("At 8x L = 4096: CLEX 3/4, PI 1/4, YaRN 3/4."), "{}", claims[3].detail);

        // CLEX worse than YaRN at retrieval 16x L, 6% above its 4P PPL at 16P, not the lowest at 32P; RoPE flat.
        let methods = [
            trained("rope-4P", 512, &[60.0, 55.0, 50.0, 51.0, 52.0, 53.0], &[]),
            trained("pi-4P", 512, &[62.0, 56.0, 51.0, 70.0, 200.0, 500.0], &[4, 4, 4, 1, 0, 1, 2]),
            trained("yarn-4P", 512, &[61.0, 56.0, 51.0, 52.0, 53.0, 50.0], &[4, 4, 4, 4, 2, 3, 4]),
            trained("clex-4P", 512, &[60.0, 55.0, 50.0, 51.0, 53.0, 60.0], &[4, 4, 4, 4, 4, 3, 2]),
        ];
        let r = report_of(&s, &methods, &set, &[]);
        let verdicts: Vec<Option<bool>> = r.long_claims().iter().map(|c| c.holds).collect();
        assert_eq!(verdicts, [Some(false), Some(false), Some(false), Some(false)]);

        // The passkey section: cells per length, "-" beyond 16x L, depth table beyond L.
        let short = trained("clex", 128, &[50.0], &[4, 2, 1, 0, 0]);
        let methods = [short, good("clex-4P")];
        let md = report_of(&s, &methods, &set, &[]).passkey_section().unwrap();
        assert!(md.contains("| CLEX | 128 | 4/4 | 2/4 | 1/4 | 0/4 | 0/4 | - | - |"), "{md}");
        assert!(md.contains("| CLEX | 3/16 |"), "beyond L = 128: 2 + 1 + 0 + 0 of 16: {md}");
        assert!(md.contains("| CLEX-4P | 13/16 |"), "beyond L = 512: 4 + 4 + 3 + 2 of 16: {md}");
        assert!(md.contains("At each model's own training length: CLEX 4/4 (0% of digits in place), CLEX-4P 4/4"), "{md}");
        assert!(!md.contains("No model retrieves"), "{md}");

        // Nothing retrieved at L = 4P by any of the three: L(d) cannot be judged (all-zero
        // accuracies beyond L are equal, not a result), and the section says so.
        let zero = |key: &str| trained(key, 512, &[60.0, 55.0, 50.0, 51.0, 52.0, 53.0], &[0; 7]);
        let methods = [zero("rope-4P"), zero("pi-4P"), zero("yarn-4P"), zero("clex-4P")];
        let r = report_of(&s, &methods, &set, &[]);
        let claims = r.long_claims();
        assert_eq!(claims[3].holds, None, "{}", claims[3].detail);
        assert!(claims[3].detail.starts_with("Not testable: at L = 512 itself CLEX 0/4, PI 0/4, YaRN 0/4"), "{}", claims[3].detail);
        let md = r.passkey_section().unwrap();
        assert!(md.contains("No model retrieves the key within its training length; at most 0% of the answers' digits"), "{md}");

        // Retrieved within L but by none of the three at 8x or 16x L: equal at zero, not a
        // result either; the detail shows where they differ.
        let near = |key: &str, cells: &[usize]| trained(key, 512, &[60.0, 55.0, 50.0, 51.0, 52.0, 53.0], cells);
        let methods =
            [near("pi-4P", &[4, 4, 4, 1, 0, 0, 0]), near("yarn-4P", &[4, 4, 4, 4, 2, 0, 0]), near("clex-4P", &[0, 0, 0, 0, 0, 0, 0])];
        let claims = report_of(&s, &methods, &set, &[]).long_claims();
        assert_eq!(claims[3].holds, None, "{}", claims[3].detail);
        assert!(
            claims[3].detail.starts_with("Not testable: none of the three retrieves a single key at 8x or 16x L")
                && claims[3].detail.contains(
                    "Within 4x L: 1x L: CLEX 0/4, PI 4/4, YaRN 4/4; 2x L: CLEX 0/4, PI 1/4, YaRN 4/4; 4x L: CLEX 0/4, PI 0/4, YaRN 2/4."
                ),
            "{}",
            claims[3].detail
        );
    }
}
