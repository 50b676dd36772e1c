//! Token sampling for generation: greedy at temperature 0, otherwise temperature, top-k and
//! top-p (nucleus) sampling from a seeded RNG, with llama.cpp-style repetition penalty.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    /// Keep the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    pub top_p: Option<f64>,
    /// Divides positive (multiplies negative) logits of recent tokens; 1 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.8, top_k: None, top_p: None, repeat_penalty: 1.0, repeat_last_n: 64, seed: 299792458 }
    }
}

/// A seeded sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler with its own RNG.
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    /// The next token given the last row of logits and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if seen.insert(t)
                    && let Some(l) = logits.get_mut(t as usize)
                {
                    *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if let Some(k) = p.top_k {
            idx.truncate(k.max(1));
        }
        let max = logits[idx[0]] as f64;
        let mut probs: Vec<f64> = idx.iter().map(|&i| ((logits[i] as f64 - max) / p.temperature).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if let Some(top_p) = p.top_p {
            let mut acc = 0.0;
            let keep = probs.iter().position(|x| {
                acc += x;
                acc >= top_p
            });
            let keep = keep.map(|k| k + 1).unwrap_or(probs.len());
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (i, pr) in idx.iter().zip(&probs) {
            if r < *pr {
                return *i as u32;
            }
            r -= pr;
        }
        idx[idx.len() - 1] as u32
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_penalty() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut greedy = Sampler::new(SamplingParams { temperature: 0.0, ..Default::default() });
        assert_eq!(greedy.sample(&logits, &[]), 1);
        // A penalty on token 1 hands the lead to token 3.
        let mut pen = Sampler::new(SamplingParams { temperature: 0.0, repeat_penalty: 1.5, ..Default::default() });
        assert_eq!(pen.sample(&logits, &[1]), 3);
        // top_k = 1 is greedy whatever the temperature.
        let mut k1 = Sampler::new(SamplingParams { temperature: 5.0, top_k: Some(1), ..Default::default() });
        assert!((0..50).all(|_| k1.sample(&logits, &[]) == 1));
        // top_p small enough keeps only the best token.
        let mut p = Sampler::new(SamplingParams { temperature: 1.0, top_p: Some(0.3), ..Default::default() });
        assert!((0..50).all(|_| p.sample(&logits, &[]) == 1));
        // Plain sampling follows the softmax and is reproducible from the seed.
        let mut a = Sampler::new(SamplingParams { temperature: 1.0, ..Default::default() });
        let mut b = Sampler::new(SamplingParams { temperature: 1.0, ..Default::default() });
        let xs: Vec<u32> = (0..2000).map(|_| a.sample(&logits, &[])).collect();
        let ys: Vec<u32> = (0..2000).map(|_| b.sample(&logits, &[])).collect();
        assert_eq!(xs, ys);
        let share1 = xs.iter().filter(|&&x| x == 1).count() as f64 / 2000.0;
        let z: f64 = logits.iter().map(|l| (*l as f64).exp()).sum();
        assert!((share1 - 3f64.exp() / z).abs() < 0.04, "{share1}");
    }
}
