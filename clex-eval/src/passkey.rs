//! Passkey retrieval, the standard synthetic long-context test: a random five-digit key is
//! hidden at a given depth of repetitive filler text of a given length, the model is asked
//! for it at the end, and greedy decoding must reproduce it.

use clex_core::ClexBackend;
use clex_models::{CachePolicy, CausalLm, GenerateOptions, SamplingParams, Session};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use crate::error::EvalError;

/// The haystack, repeated to fill the prompt.
pub const FILLER: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
/// The question that ends every prompt.
pub const QUESTION: &str = "What is the pass key? The pass key is";
/// Tokens decoded for the answer.
const ANSWER_TOKENS: usize = 8;

/// The needle that hides `key`.
fn needle_text(key: u32) -> String {
    format!("The pass key is {key}. Remember it. {key} is the pass key. ")
}

/// One retrieval attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The hidden key.
    pub key: u32,
    /// Tokens of the prompt (the requested length).
    pub prompt_tokens: usize,
    /// Where the needle starts in the prompt, found in the prompt itself.
    pub needle_at: Option<usize>,
    /// Tokens of the needle.
    pub needle_tokens: usize,
    /// The decoded greedy answer.
    pub answer: String,
    /// Whether the answer retrieves the key ([`retrieved`]).
    pub retrieved: bool,
}

/// The trials of one prompt length and needle depth.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Prompt length in tokens.
    pub length: usize,
    /// Depth of the needle as a fraction of the filler.
    pub depth: f64,
    /// One per random key.
    pub trials: Vec<Trial>,
}

impl Cell {
    /// Trials that retrieved their key.
    pub fn correct(&self) -> usize {
        self.trials.iter().filter(|t| t.retrieved).count()
    }

    /// Fraction of trials that retrieved their key (0 without trials).
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.trials.len().max(1) as f64
    }
}

/// The passkey task for one tokenizer: the filler and question encoded once.
pub struct PasskeyTask<'t> {
    tokenizer: &'t Tokenizer,
    bos: Option<u32>,
    filler: Vec<u32>,
    question: Vec<u32>,
}

impl<'t> PasskeyTask<'t> {
    /// Prompts encoded with `tokenizer` (no special tokens), starting with `bos` when given.
    pub fn new(tokenizer: &'t Tokenizer, bos: Option<u32>) -> Result<Self, EvalError> {
        let mut task = PasskeyTask { tokenizer, bos, filler: Vec::new(), question: Vec::new() };
        task.filler = task.encode(FILLER)?;
        task.question = task.encode(QUESTION)?;
        Ok(task)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, EvalError> {
        Ok(self.tokenizer.encode(text, false).map_err(|e| EvalError::Invalid(format!("tokenizing: {e}")))?.get_ids().to_vec())
    }

    /// The prompt of exactly `length` tokens hiding `key` at `depth` (of the filler, in
    /// tokens: round(depth · filler)): BOS, filler, needle, filler, question. Also returns the
    /// needle.
    pub fn prompt(&self, length: usize, depth: f64, key: u32) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
        let needle = self.encode(&needle_text(key))?;
        let fixed = self.bos.iter().count() + needle.len() + self.question.len();
        let budget = length.checked_sub(fixed).filter(|b| *b > 0).ok_or_else(|| {
            EvalError::Invalid(format!("a prompt of {length} tokens is too short for the key and question ({fixed} tokens)"))
        })?;
        let hay: Vec<u32> = self.filler.iter().copied().cycle().take(budget).collect();
        let at = (budget as f64 * depth).round() as usize;
        let prompt = self.bos.iter().chain(&hay[..at]).chain(&needle).chain(&hay[at..]).chain(&self.question).copied().collect();
        Ok((prompt, needle))
    }

    /// A training window of exactly `tokens` tokens in the test's own format: a prompt (key in
    /// 10000..100000, depth uniform in [0, 1], both from `rng`) followed by the answer
    /// " KEY." as greedy decoding should produce it. Mixed into training data, it teaches a
    /// model to retrieve within its training length; the evaluation then asks beyond it.
    pub fn training_window(&self, tokens: usize, rng: &mut ChaCha8Rng) -> Result<Vec<u32>, EvalError> {
        let key: u32 = rng.random_range(10000..100000);
        let depth: f64 = rng.random_range(0.0..=1.0);
        let answer = self.encode(&format!(" {key}."))?;
        let (mut window, _) = self.prompt(tokens.saturating_sub(answer.len()), depth, key)?;
        window.extend_from_slice(&answer);
        Ok(window)
    }

    /// `trials` attempts at `length` and `depth`, each with a key in 10000..100000 drawn from
    /// `rng`, answered by greedy decoding.
    pub fn run_cell<B: ClexBackend>(
        &self,
        model: &CausalLm<B>,
        length: usize,
        depth: f64,
        trials: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Cell, EvalError> {
        if !(0.0..=1.0).contains(&depth) {
            return Err(EvalError::Invalid(format!("depth {depth}: must be in [0, 1]")));
        }
        let mut cell = Cell { length, depth, trials: Vec::with_capacity(trials) };
        for _ in 0..trials {
            let key: u32 = rng.random_range(10000..100000);
            let (prompt, needle) = self.prompt(length, depth, key)?;
            let answer = greedy(model, &prompt, ANSWER_TOKENS)?;
            let answer = self.tokenizer.decode(&answer, true).map_err(|e| EvalError::Invalid(format!("decoding: {e}")))?;
            cell.trials.push(Trial {
                key,
                prompt_tokens: prompt.len(),
                needle_at: prompt.windows(needle.len()).position(|w| w == needle.as_slice()),
                needle_tokens: needle.len(),
                retrieved: retrieved(&answer, key),
                answer,
            });
        }
        Ok(cell)
    }
}

/// Whether an answer retrieves `key`: its first run of digits is exactly the key.
pub fn retrieved(answer: &str, key: u32) -> bool {
    first_number(answer) == key.to_string()
}

/// How many of the key's digits the answer's first run of digits has in place: a model that
/// learned the answer's form but not the retrieval scores about one in ten.
pub fn digits_in_place(answer: &str, key: u32) -> usize {
    first_number(answer).chars().zip(key.to_string().chars()).filter(|(a, k)| a == k).count()
}

fn first_number(answer: &str) -> String {
    answer.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect()
}

/// The `n` tokens greedy decoding continues `prompt` with, through the KV cache, with no
/// stop token and no length limit (the test is how the model does beyond its range).
pub fn greedy<B: ClexBackend>(model: &CausalLm<B>, prompt: &[u32], n: usize) -> Result<Vec<u32>, EvalError> {
    let mut session = Session::new(model, CachePolicy::Reference);
    let options = GenerateOptions {
        sampling: SamplingParams { temperature: 0.0, repeat_penalty: 1.0, ..SamplingParams::default() },
        max_new_tokens: n,
        max_seq_len: Some(usize::MAX),
        stop_tokens: Vec::new(),
    };
    Ok(session.generate(prompt, options)?.collect::<Result<Vec<u32>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::{digits_in_place, greedy, retrieved};
    use burn::tensor::{Int, Tensor, TensorData};

    /// Greedy decoding through the KV cache picks, at every step, the argmax of a full
    /// uncached forward over the prompt and the tokens so far (CLEX, with t changing from 1
    /// to 2 as the sequence passes P = 128).
    #[test]
    fn greedy_decoding_follows_the_uncached_argmax() {
        let m = crate::eval::tests::confident(Some(4));
        let prompt: Vec<u32> = (0..124u32).map(|i| (i * 11 + 3) % 63 + 1).collect();
        let answer = greedy(&m, &prompt, 8).unwrap();
        let mut seq = prompt.clone();
        for &token in &answer {
            let ids = TensorData::new(seq.iter().map(|&t| t as i64).collect(), [1, seq.len()]);
            let logits: Vec<f32> =
                m.forward(Tensor::<_, 2, Int>::from_data(ids, &Default::default())).unwrap().into_data().iter::<f32>().collect();
            let last = &logits[(seq.len() - 1) * 64..];
            assert_eq!(token, clex_models::sampling::argmax(last), "after {} tokens", seq.len());
            seq.push(token);
        }
        assert!(answer.iter().collect::<std::collections::BTreeSet<_>>().len() > 1, "a constant answer would not test much: {answer:?}");
    }

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

    #[test]
    fn digits_in_place_counts_positions_of_the_first_number() {
        assert_eq!(digits_in_place(" 79872. Remember it.", 79872), 5);
        assert_eq!(digits_in_place(" 19192. Rem", 39192), 4, "all but the first");
        assert_eq!(digits_in_place(" 97872", 79872), 3, "two swapped");
        assert_eq!(digits_in_place(" 7987", 79872), 4, "a prefix");
        assert_eq!(digits_in_place(" 1 79872", 79872), 0, "only the first run counts");
        assert_eq!(digits_in_place(" no digits", 79872), 0);
    }
}
