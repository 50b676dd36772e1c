//! `clex passkey`: the standard synthetic retrieval test. A random number is hidden at a
//! given depth of repetitive filler text of a given length, and the model is asked for it
//! at the end; greedy decoding must reproduce it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clex_models::backend::{self, Inference};
use clex_models::{CachePolicy, ForwardOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{default_bos, ids_tensor, last_row, load_model, model_tokenizer, parse_dtype};

const FILLER: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
const QUESTION: &str = "What is the pass key? The pass key is";

/// Arguments of `clex passkey`.
#[derive(clap::Args, Debug)]
pub struct PasskeyArgs {
    /// GPU index for GPU backends.
    #[arg(long)]
    device: Option<usize>,
    /// HF model directory or .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// tokenizer.json (default MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Prompt lengths in tokens, comma-separated (default P, 2P, 4P).
    #[arg(long)]
    lengths: Option<String>,
    /// Depths of the key as fractions of the filler, comma-separated.
    #[arg(long, default_value = "0,0.25,0.5,0.75,1")]
    depths: String,
    /// Trials (random keys) per length and depth.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Seed of the keys.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Compute dtype: f32 | f16 | bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Write the results as JSON here (per cell, and per trial: key, needle position, answer).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_list<T: std::str::FromStr>(s: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    s.split(',').map(|x| x.trim().parse::<T>().map_err(|_| anyhow::anyhow!("{flag}: `{x}` is not a number"))).collect()
}

pub fn run(args: PasskeyArgs) -> anyhow::Result<()> {
    let device = backend::device(args.device);
    let model = load_model(&args.model, &device, parse_dtype(&args.dtype)?)?;
    let p = model.rope().max_position_embeddings;
    let lengths: Vec<usize> = match &args.lengths {
        Some(s) => parse_list(s, "--lengths")?,
        None => vec![p, 2 * p, 4 * p],
    };
    let depths: Vec<f64> = parse_list(&args.depths, "--depths")?;
    if depths.iter().any(|d| !(0.0..=1.0).contains(d)) {
        bail!("--depths: every depth must be in [0, 1]");
    }
    let (tok, _) = model_tokenizer(&args.model, args.tokenizer.as_deref())?;
    let enc = |s: &str| -> anyhow::Result<Vec<u32>> {
        Ok(tok.encode(s, false).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
    };
    let filler = enc(FILLER)?;
    let question = enc(QUESTION)?;
    let bos: Vec<u32> = if default_bos(&args.model)? { model.config().bos_token_id.into_iter().collect() } else { vec![] };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    println!("{:>8} {:>6} {:>8} {:>9}", "length", "depth", "correct", "accuracy");
    let mut cells = Vec::new();
    for &len in &lengths {
        for &depth in &depths {
            let mut correct = 0;
            let mut detail = Vec::new();
            for _ in 0..args.trials {
                let key: u32 = rng.random_range(10000..100000);
                let needle = enc(&format!("The pass key is {key}. Remember it. {key} is the pass key. "))?;
                let budget = len
                    .checked_sub(bos.len() + needle.len() + question.len())
                    .filter(|b| *b > 0)
                    .with_context(|| format!("--lengths {len}: too short for the key and question"))?;
                let hay: Vec<u32> = filler.iter().copied().cycle().take(budget).collect();
                let at = (budget as f64 * depth).round() as usize;
                let prompt: Vec<u32> = bos.iter().chain(&hay[..at]).chain(&needle).chain(&hay[at..]).chain(&question).copied().collect();
                let answer = greedy(&model, &prompt, 8, &device)?;
                let text = tok.decode(&answer, true).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
                correct += retrieved(&text, key) as usize;
                // Where the needle really is, found in the prompt, for tests and debugging.
                let needle_at = prompt.windows(needle.len()).position(|w| w == needle.as_slice());
                detail.push(serde_json::json!({"key": key, "prompt_tokens": prompt.len(), "needle_at": needle_at, "needle_tokens": needle.len(), "answer": text}));
            }
            let acc = correct as f64 / args.trials.max(1) as f64;
            println!("{len:>8} {depth:>6.2} {correct:>4}/{:<3} {acc:>9.3}", args.trials);
            cells.push(serde_json::json!({"length": len, "depth": depth, "trials": args.trials, "correct": correct, "accuracy": acc, "detail": detail}));
        }
    }
    if let Some(j) = &args.json {
        let v = serde_json::json!({"model": args.model, "seed": args.seed, "results": cells});
        clex_models::write_atomic(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}

/// Whether an answer retrieves `key`: its first run of digits is exactly the key.
fn retrieved(answer: &str, key: u32) -> bool {
    let digits: String = answer.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    digits == key.to_string()
}

fn greedy(
    model: &clex_models::CausalLm<Inference>,
    prompt: &[u32],
    n: usize,
    device: &burn::tensor::Device<Inference>,
) -> anyhow::Result<Vec<u32>> {
    let mut cache = model.new_cache(CachePolicy::Reference);
    let mut logits = model.forward_with(ids_tensor(prompt, device), Some(&mut cache), &ForwardOptions::default())?.logits;
    let mut out = Vec::new();
    for _ in 0..n {
        let next = clex_models::sampling::argmax(&last_row(logits)?);
        out.push(next);
        logits = model.forward_with(ids_tensor(&[next], device), Some(&mut cache), &ForwardOptions::default())?.logits;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::retrieved;

    #[test]
    fn only_the_exact_key_counts_as_retrieved() {
        assert!(retrieved(" 79872. Remember it.", 79872));
        assert!(retrieved("79872", 79872));
        assert!(!retrieved(" 12345.", 79872), "another five-digit number");
        assert!(!retrieved(" 798721", 79872), "the key with a digit more");
        assert!(!retrieved(" 7987", 79872), "a prefix of the key");
        assert!(!retrieved(" 7 9872", 79872), "the key split: only the first run counts");
        assert!(!retrieved(" the pass key.", 79872), "no digits");
    }
}
