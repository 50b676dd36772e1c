//! The one evaluation engine: perplexity and next-token accuracy of a token stream at an
//! evaluation length, under a [`Protocol`]:
//!
//! - [`Protocol::Chunks`], the CLEX paper's: non-overlapping windows of the length, one
//!   forward each at inference semantics (integer positions, CLEX t = ceil(N/P), dynamic
//!   rope kinds at N), batched, every predicted token scored;
//! - [`Protocol::KvChunks`], the official evaluation's: each window fed a chunk at a time
//!   through the KV cache ([`Session`]), each chunk scoring its own predictions;
//! - [`Protocol::Sliding`]: a window every `stride` tokens, each token scored once, by the
//!   first window that predicts it.
//!
//! [`EvalSet`] fixes the text for comparing models: regions of long documents, cut into
//! windows of any length that divides the region, so every length and every model sees the
//! same tokens.

use burn::tensor::{Int, Tensor, TensorData};
use clex_core::ClexBackend;
use clex_models::session::PREFILL_CHUNK;
use clex_models::{CachePolicy, CausalLm, Session};

use crate::error::EvalError;

/// Sum of NLL, number of scored tokens, number correct.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
    /// Σ −log p(target).
    pub nll: f64,
    /// Targets scored.
    pub count: usize,
    /// Targets that were the argmax.
    pub correct: usize,
}

/// −log softmax(row)[target], computed in f64 with the max subtracted.
pub fn token_nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x)) as f64;
    let lse = max + row.iter().map(|x| (*x as f64 - max).exp()).sum::<f64>().ln();
    lse - row[target] as f64
}

impl Tally {
    /// Scores `logits` rows `from..` (`[ids.len(), vocab]`, row i predicting `ids[i + 1]`).
    pub fn add(&mut self, logits: &[f32], vocab: usize, ids: &[u32], from: usize) {
        self.add_rows(logits, vocab, ids, from, ids.len().saturating_sub(1));
    }

    /// Scores rows `from..to` only (row i predicts `ids[i + 1]`).
    pub fn add_rows(&mut self, logits: &[f32], vocab: usize, ids: &[u32], from: usize, to: usize) {
        for i in from..to.min(ids.len().saturating_sub(1)) {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let target = ids[i + 1] as usize;
            self.nll += token_nll(row, target);
            self.count += 1;
            self.correct += (clex_models::sampling::argmax(row) as usize == target) as usize;
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: Tally) {
        self.nll += other.nll;
        self.count += other.count;
        self.correct += other.correct;
    }

    /// Mean NLL per scored token (NaN when nothing was scored).
    pub fn mean_nll(&self) -> f64 {
        self.nll / self.count as f64
    }

    /// exp(mean NLL).
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// Fraction of targets that were the argmax.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count as f64
    }
}

/// The evaluation text: equal regions of long documents.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSet {
    /// Regions of `region_len` tokens each.
    pub regions: Vec<Vec<u32>>,
    /// Tokens per region (the longest evaluation length).
    pub region_len: usize,
    /// Documents long enough to contribute.
    pub documents: usize,
}

impl EvalSet {
    /// Each document becomes `BOS + ids` (as clex-train's packing starts documents);
    /// those with at least `region_len` tokens are cut into non-overlapping regions (the
    /// rest dropped), and up to `max_regions` are taken round-robin over the documents (the
    /// first region of each, then the second, ...), so every long document contributes.
    pub fn from_documents(docs: &[Vec<u32>], bos: Option<u32>, region_len: usize, max_regions: usize) -> Self {
        let per_doc: Vec<Vec<Vec<u32>>> = docs
            .iter()
            .map(|d| {
                let stream: Vec<u32> = bos.into_iter().chain(d.iter().copied()).collect();
                stream.chunks_exact(region_len.max(1)).map(<[u32]>::to_vec).collect::<Vec<_>>()
            })
            .filter(|r| !r.is_empty())
            .collect();
        let mut regions = Vec::new();
        for k in 0.. {
            let before = regions.len();
            for doc in &per_doc {
                if regions.len() < max_regions
                    && let Some(r) = doc.get(k)
                {
                    regions.push(r.clone());
                }
            }
            if regions.len() == before {
                break;
            }
        }
        EvalSet { regions, region_len, documents: per_doc.len() }
    }

    /// The windows of `len` tokens: each region cut into `region_len / len` pieces (a
    /// remainder, when `len` does not divide the region, is dropped).
    pub fn windows(&self, len: usize) -> Vec<&[u32]> {
        self.regions.iter().flat_map(|r| r.chunks_exact(len.max(1))).collect()
    }
}

/// How windows of an evaluation length are fed to the model and which predictions count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Non-overlapping windows, one (batched) forward each, every prediction scored.
    Chunks,
    /// Non-overlapping windows, each fed `chunk` tokens at a time through the KV cache; each
    /// chunk scores only its own next-token predictions, as the official evaluation does.
    KvChunks {
        /// Tokens per cached forward.
        chunk: usize,
    },
    /// A window of the length every `stride` tokens; each scores only the targets the
    /// previous window did not.
    Sliding {
        /// Tokens between window starts.
        stride: usize,
    },
}

impl Protocol {
    /// Tokens in one forward at evaluation length `len` (of one window: chunks batch several).
    pub fn forward_len(&self, len: usize) -> usize {
        match *self {
            Protocol::KvChunks { chunk } => chunk.min(len),
            Protocol::Chunks | Protocol::Sliding { .. } => len,
        }
    }
}

/// How much of the stream one evaluation length reads, and how many tokens one forward holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens of the stream evaluated at most (at least one window's worth).
    pub max_tokens: usize,
    /// Tokens per batched forward at most (chunks; at least one window per forward).
    pub max_batch_tokens: usize,
}

/// The score of one evaluation length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthScore {
    /// Summed NLL, scored targets, correct predictions.
    pub tally: Tally,
    /// Windows fed to the model.
    pub windows: usize,
}

/// Evaluates `stream` at length `len` under `protocol`, reading at most `limits.max_tokens`
/// tokens from its start. `on_window(done, total)` reports progress after each forward
/// (each batch, under chunks).
pub fn evaluate<B: ClexBackend>(
    model: &CausalLm<B>,
    stream: &[u32],
    len: usize,
    protocol: Protocol,
    limits: Limits,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<LengthScore, EvalError> {
    if len < 2 {
        return Err(EvalError::Invalid(format!("evaluation length {len}: every length must be at least 2")));
    }
    let vocab = model.config().vocab_size;
    let limit = stream.len().min(limits.max_tokens.max(len));
    let mut tally = Tally::default();
    match protocol {
        Protocol::Chunks => {
            let windows: Vec<&[u32]> = stream[..limit].chunks_exact(len).collect();
            let tally = score_batches(model, &windows, limits.max_batch_tokens, &[0], on_window)?.remove(0);
            Ok(LengthScore { tally, windows: windows.len() })
        }
        Protocol::KvChunks { chunk } => {
            if chunk == 0 {
                return Err(EvalError::Invalid("kv-chunks: the chunk must hold at least one token".into()));
            }
            let total = limit / len;
            for (i, window) in stream[..limit].chunks_exact(len).enumerate() {
                on_window(i + 1, total);
                let mut session = Session::new(model, CachePolicy::Reference);
                for piece in window.chunks(chunk) {
                    tally.add(&session.logits(piece)?, vocab, piece, 0);
                }
            }
            Ok(LengthScore { tally, windows: total })
        }
        Protocol::Sliding { stride } => {
            if stride == 0 {
                return Err(EvalError::Invalid("sliding: the stride must be at least one token".into()));
            }
            let total = limit.saturating_sub(len) / stride + 1;
            let (mut windows, mut begin, mut prev_end) = (0, 0, 0);
            while prev_end < limit {
                let end = (begin + len).min(limit);
                let window = &stream[begin..end];
                // Score only the targets the previous window did not.
                let first_new = (prev_end.max(begin + 1) - begin).saturating_sub(1);
                if window.len() > PREFILL_CHUNK {
                    score_long_window(model, window, &[0], std::slice::from_mut(&mut tally), first_new)?;
                } else {
                    tally.add(&forward_rows(model, &[window])?, vocab, window, first_new);
                }
                windows += 1;
                on_window(windows, total);
                prev_end = end;
                if end == limit {
                    break;
                }
                begin += stride;
            }
            Ok(LengthScore { tally, windows })
        }
    }
}

/// Scores windows (all of one length) with batched forwards of at most `max_batch_tokens`
/// tokens (at least one window per forward); every token but each window's first is a
/// target, predicted from the window's preceding tokens only.
pub fn score_windows<B: ClexBackend>(model: &CausalLm<B>, windows: &[&[u32]], max_batch_tokens: usize) -> Result<Tally, EvalError> {
    Ok(score_windows_by_position(model, windows, max_batch_tokens, &[0])?.remove(0))
}

/// [`score_windows`] split by position in the window: tally b counts the predictions made at
/// positions `starts[b]..starts[b + 1]` (the last up to the window's end). `starts` must
/// begin with 0 and increase.
pub fn score_windows_by_position<B: ClexBackend>(
    model: &CausalLm<B>,
    windows: &[&[u32]],
    max_batch_tokens: usize,
    starts: &[usize],
) -> Result<Vec<Tally>, EvalError> {
    score_batches(model, windows, max_batch_tokens, starts, &mut |_, _| {})
}

/// The chunks protocol: [`score_windows_by_position`], reporting (windows done, total) after
/// each batch.
fn score_batches<B: ClexBackend>(
    model: &CausalLm<B>,
    windows: &[&[u32]],
    max_batch_tokens: usize,
    starts: &[usize],
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Tally>, EvalError> {
    if starts.first() != Some(&0) || starts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(EvalError::Invalid(format!("position buckets must start at 0 and increase: {starts:?}")));
    }
    let mut tallies = vec![Tally::default(); starts.len()];
    let Some(first) = windows.first() else { return Ok(tallies) };
    let len = first.len();
    if len < 2 || windows.iter().any(|w| w.len() != len) {
        return Err(EvalError::Invalid(format!("evaluation windows must share one length of at least 2 tokens (first has {len})")));
    }
    let vocab = model.config().vocab_size;
    let mut done = 0;
    if len > PREFILL_CHUNK {
        for (i, w) in windows.iter().enumerate() {
            score_long_window(model, w, starts, &mut tallies, 0)?;
            on_batch(i + 1, windows.len());
        }
        return Ok(tallies);
    }
    for batch in windows.chunks((max_batch_tokens / len).max(1)) {
        let logits = forward_rows(model, batch)?;
        for (w, rows) in batch.iter().zip(logits.chunks_exact(len * vocab)) {
            for (b, tally) in tallies.iter_mut().enumerate() {
                tally.add_rows(rows, vocab, w, starts[b], starts.get(b + 1).copied().unwrap_or(len));
            }
        }
        done += batch.len();
        on_batch(done, windows.len());
    }
    Ok(tallies)
}

/// Scores a window longer than one prefill chunk through a [`Session`], which runs it in
/// chunks pinned to the window's length (equal to one forward over it, without holding all
/// of its logits): rows `from..` into the tallies by position bucket as in
/// [`score_windows_by_position`].
fn score_long_window<B: ClexBackend>(
    model: &CausalLm<B>,
    window: &[u32],
    starts: &[usize],
    tallies: &mut [Tally],
    from: usize,
) -> Result<(), EvalError> {
    let vocab = model.config().vocab_size;
    let len = window.len();
    let mut session = Session::new(model, CachePolicy::Reference);
    session.logits_by_chunk(window, |first, rows| {
        let n = rows.len() / vocab;
        for (b, tally) in tallies.iter_mut().enumerate() {
            let lo = starts[b].max(from).max(first);
            let hi = starts.get(b + 1).copied().unwrap_or(len).min(first + n);
            if lo < hi {
                tally.add_rows(rows, vocab, &window[first..], lo - first, hi - first);
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// One uncached forward of `batch` (windows of one length) at inference semantics; the
/// logits on the host, `[batch.len() * len * vocab]`, row-major.
fn forward_rows<B: ClexBackend>(model: &CausalLm<B>, batch: &[&[u32]]) -> Result<Vec<f32>, EvalError> {
    let vocab = model.config().vocab_size;
    if let Some(bad) = batch.iter().flat_map(|w| w.iter()).find(|&&t| t as usize >= vocab) {
        return Err(EvalError::Invalid(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
    }
    let len = batch.first().map_or(0, |w| w.len());
    let ids: Vec<i64> = batch.iter().flat_map(|w| w.iter().map(|&t| t as i64)).collect();
    let device = model.embed.weight.val().device();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch.len(), len]), &device);
    model
        .forward(tokens)?
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| EvalError::Invalid(format!("reading logits back: {e:?}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::Flex;
    use clex_models::{ModelConfig, init_model};
    use serde_json::{Value, json};

    /// clex-train's tiny preset (4 layers, width 128, P = 128) over a 64-token vocabulary,
    /// with plain RoPE or CLEX with T_max = `clex_max_factor`.
    pub(crate) fn model(clex_max_factor: Option<usize>) -> CausalLm<Flex> {
        let scaling = match clex_max_factor {
            None => Value::Null,
            Some(t) => json!({"type": "clex", "max_factor": t, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1}),
        };
        let raw = json!({"model_type": "llama", "vocab_size": 64, "hidden_size": 128, "intermediate_size": 352,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": scaling, "hidden_act": "silu",
            "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0});
        init_model(ModelConfig::from_json(raw, std::path::Path::new("<test>")).unwrap(), &Default::default(), 3)
    }

    fn ids(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + salt * 13 + i * i % 5) % 63 + 1).collect()
    }

    #[test]
    fn regions_are_round_robin_over_long_documents_with_bos() {
        let docs = vec![ids(10, 1), ids(3, 2), ids(9, 3)];
        let set = EvalSet::from_documents(&docs, Some(0), 4, 5);
        // Doc 0: 11 tokens → 2 regions; doc 1: 4 → 1; doc 2: 10 → 2 (remainders dropped).
        assert_eq!(set.documents, 3);
        let bos_doc = |d: &Vec<u32>| std::iter::once(0).chain(d.iter().copied()).collect::<Vec<u32>>();
        let (d0, d1, d2) = (bos_doc(&docs[0]), bos_doc(&docs[1]), bos_doc(&docs[2]));
        assert_eq!(set.regions, vec![d0[..4].to_vec(), d1[..4].to_vec(), d2[..4].to_vec(), d0[4..8].to_vec(), d2[4..8].to_vec()]);
        assert_eq!(EvalSet::from_documents(&docs, Some(0), 4, 2).regions.len(), 2);
        // Every length covers the same tokens.
        let flat = |len| set.windows(len).concat();
        assert_eq!(flat(2), flat(4));
        assert_eq!(set.windows(2).len(), 10);
    }

    /// A model whose predictions are far from uniform (mean NLL ~9.3 nats against ln 64 =
    /// 4.2 for a uniform one): the random head scaled 15x, so a wrong target, row or window
    /// moves the NLL by whole nats.
    pub(crate) fn confident(clex_max_factor: Option<usize>) -> CausalLm<Flex> {
        let mut m = model(clex_max_factor);
        let head = m.lm_head.take().expect("an untied head");
        m.lm_head =
            Some(burn::nn::Linear { weight: burn::module::Param::from_tensor(head.weight.val().mul_scalar(15.0)), bias: head.bias });
        m
    }

    /// Σ −log softmax(row)[target] over a window's rows, by hand in f64 from one forward of
    /// that window alone, with the number of argmax hits.
    fn by_hand(m: &CausalLm<Flex>, w: &[u32]) -> (f64, usize) {
        let t =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(w.iter().map(|&x| x as i64).collect(), [1, w.len()]), &Default::default());
        let logits: Vec<f32> = m.forward(t).unwrap().into_data().iter::<f32>().collect();
        let (mut nll, mut hits) = (0.0f64, 0);
        for (i, row) in logits.chunks_exact(64).take(w.len() - 1).enumerate() {
            let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            nll += max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln() - row[w[i + 1] as usize];
            let best = (0..64).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            hits += (best == w[i + 1] as usize) as usize;
        }
        (nll, hits)
    }

    #[test]
    fn batched_scores_equal_a_direct_log_softmax_per_window() {
        for clex_max_factor in [None, Some(4)] {
            let m = confident(clex_max_factor);
            // 3 windows of 2P = 256 tokens: CLEX runs at t = 2.
            let data: Vec<Vec<u32>> = (0..3).map(|s| ids(256, s)).collect();
            let windows: Vec<&[u32]> = data.iter().map(Vec::as_slice).collect();
            let batched = score_windows(&m, &windows, 1024).unwrap();
            let single = score_windows(&m, &windows, 1).unwrap();
            assert_eq!(batched.count, 3 * 255);
            assert_eq!(batched.correct, single.correct);
            let (mut direct, mut hits) = (0.0f64, 0);
            for w in &windows {
                let (nll, h) = by_hand(&m, w);
                direct += nll;
                hits += h;
            }
            // Far from uniform: a mean NLL well away from ln 64 = 4.16, and some hits.
            let mean = direct / 765.0;
            assert!(!(3.0..5.5).contains(&mean) && hits > 0, "mean NLL {mean}, {hits} hits: the model is too uniform to test");
            assert_eq!(batched.correct, hits);
            // Measured 6.4e-16 relative: the logits are bit-identical, only the f64 summation
            // order differs. Reordering a sum of n positive terms moves it by at most about
            // n·ε relative: 765 × 1.1e-16 = 8.5e-14, so 1e-13.
            let rel = |a: f64| (a - direct).abs() / direct;
            eprintln!(
                "{:?}: mean NLL {mean:.3}, {hits} hits; relative |batched − by hand| {:.1e}, |single − by hand| {:.1e}",
                m.rope().scaling.kind(),
                rel(batched.nll),
                rel(single.nll)
            );
            assert!(rel(batched.nll) < 1e-13 && rel(single.nll) < 1e-13, "{batched:?} / {single:?} vs {direct}");
            // exp turns the mean's relative error δ < 1e-13 into a relative error mean·δ, plus a
            // few ε for exp and the division (measured 7.1e-15 at mean 9.3).
            let ppl = (batched.perplexity() / mean.exp() - 1.0).abs();
            eprintln!("perplexity relative |batched − by hand| {ppl:.1e}");
            assert!(ppl < (mean + 1.0) * 1e-13, "perplexity {} vs {}", batched.perplexity(), mean.exp());
            assert_eq!(batched.accuracy(), hits as f64 / 765.0);
        }
    }

    /// Windows longer than one prefill chunk go through a session in pinned chunks: the same
    /// score as one forward over the window (by hand), per position bucket, CLEX at t = 5.
    #[test]
    fn long_windows_score_through_chunks_as_one_forward() {
        let m = confident(Some(8));
        let len = PREFILL_CHUNK + 90; // 602 tokens, P = 128: t = 5
        let data = [ids(len, 7)];
        let windows: Vec<&[u32]> = data.iter().map(Vec::as_slice).collect();
        let starts = [0, 100, 530];
        let chunked = score_windows_by_position(&m, &windows, 1 << 20, &starts).unwrap();
        let (direct, hits) = by_hand(&m, windows[0]);
        let total = chunked.iter().fold(Tally::default(), |mut a, t| {
            a.merge(*t);
            a
        });
        assert_eq!(total.count, len - 1);
        assert_eq!(chunked.iter().map(|t| t.count).collect::<Vec<_>>(), vec![100, 430, len - 1 - 530]);
        assert_eq!(total.correct, hits);
        let rel = (total.nll - direct).abs() / direct;
        assert!(rel < 1e-6, "chunked {} vs one forward {direct}: {rel:e}", total.nll);
    }

    #[test]
    fn position_buckets_partition_the_window_score() {
        let m = model(None);
        let data: Vec<Vec<u32>> = (0..2).map(|s| ids(100, s)).collect();
        let windows: Vec<&[u32]> = data.iter().map(Vec::as_slice).collect();
        let whole = score_windows(&m, &windows, 1024).unwrap();
        let parts = score_windows_by_position(&m, &windows, 1024, &[0, 10, 50]).unwrap();
        // Rows 0..10, 10..50, 50..99 (the last row has no target).
        assert_eq!(parts.iter().map(|t| t.count).collect::<Vec<_>>(), [20, 80, 98]);
        let mut merged = Tally::default();
        parts.iter().for_each(|t| merged.merge(*t));
        assert_eq!((merged.count, merged.correct), (whole.count, whole.correct));
        assert!((merged.nll - whole.nll).abs() < 1e-9 * whole.nll);
        // Each bucket equals scoring those rows directly.
        let one = score_windows_by_position(&m, &windows[..1], 1024, &[0, 10, 50]).unwrap();
        let t = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new(windows[0].iter().map(|&x| x as i64).collect(), [1, 100]),
            &Default::default(),
        );
        let logits: Vec<f32> = m.forward(t).unwrap().into_data().iter::<f32>().collect();
        let direct: f64 = (10..50).map(|i| token_nll(&logits[i * 64..(i + 1) * 64], windows[0][i + 1] as usize)).sum();
        assert!((one[1].nll - direct).abs() < 1e-9 * direct, "{} vs {direct}", one[1].nll);
        assert!(score_windows_by_position(&m, &windows, 1024, &[1, 10]).is_err());
        assert!(score_windows_by_position(&m, &windows, 1024, &[0, 10, 10]).is_err());
    }

    #[test]
    fn mistakes_are_errors() {
        let m = model(None);
        let (a, b) = (ids(8, 0), ids(9, 0));
        assert!(score_windows(&m, &[&a, &b], 64).is_err());
        assert!(score_windows(&m, &[&[1u32][..]], 64).is_err());
        assert!(score_windows(&m, &[&[1u32, 64][..]], 64).is_err());
        assert_eq!(score_windows(&m, &[], 64).unwrap(), Tally::default());
    }

    /// The three protocols agree where they must: kv-chunks with one chunk per window and
    /// sliding with a stride of the whole length see exactly the chunks protocol's windows;
    /// kv-chunks with smaller chunks scores fewer targets (each chunk's first token has no
    /// prediction from its own chunk) and a different NLL (its rows see the cached prefix).
    #[test]
    fn protocols_agree_where_they_see_the_same_windows() {
        let m = confident(None);
        let stream = ids(300, 5);
        let limits = Limits { max_tokens: 256, max_batch_tokens: 128 };
        let mut seen = Vec::new();
        let chunks = evaluate(&m, &stream, 64, Protocol::Chunks, limits, &mut |i, n| seen.push((i, n))).unwrap();
        // 256 tokens: 4 windows of 64, two per batched forward.
        assert_eq!((chunks.windows, chunks.tally.count), (4, 4 * 63));
        assert_eq!(seen, [(2, 4), (4, 4)]);
        let windows: Vec<&[u32]> = stream[..256].chunks_exact(64).collect();
        assert_eq!(chunks.tally, score_windows(&m, &windows, 64).unwrap());

        let close = |a: &LengthScore, b: &LengthScore| {
            a.windows == b.windows
                && a.tally.count == b.tally.count
                && a.tally.correct == b.tally.correct
                && (a.tally.nll - b.tally.nll).abs() < 1e-9 * b.tally.nll
        };
        let whole = evaluate(&m, &stream, 64, Protocol::KvChunks { chunk: 64 }, limits, &mut |_, _| {}).unwrap();
        assert!(close(&whole, &chunks), "{whole:?} vs {chunks:?}");
        let sliding = evaluate(&m, &stream, 64, Protocol::Sliding { stride: 64 }, limits, &mut |_, _| {}).unwrap();
        assert!(close(&sliding, &chunks), "{sliding:?} vs {chunks:?}");

        let pieces = evaluate(&m, &stream, 64, Protocol::KvChunks { chunk: 16 }, limits, &mut |_, _| {}).unwrap();
        assert_eq!((pieces.windows, pieces.tally.count), (4, 4 * 4 * 15));
        // Overlapping windows: every token after the first scored exactly once.
        let overlap = evaluate(&m, &stream, 64, Protocol::Sliding { stride: 24 }, limits, &mut |_, _| {}).unwrap();
        assert_eq!((overlap.windows, overlap.tally.count), (9, 255));
        assert!(evaluate(&m, &stream, 1, Protocol::Chunks, limits, &mut |_, _| {}).is_err());
        assert!(evaluate(&m, &stream, 64, Protocol::Sliding { stride: 0 }, limits, &mut |_, _| {}).is_err());
    }
}
