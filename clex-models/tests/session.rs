//! [`Session`]: prefill + steps give what a full forward gives, and generation draws the
//! same tokens as the decode loop `clex generate` ran before the session existed.

mod common;

use clex_models::{CachePolicy, CausalLm, ForwardOptions, GenerateOptions, Sampler, SamplingParams, Session, StopReason};
use common::{B, check, ids, load, values};

/// Logits of the last row of a cache-free forward of `tokens`.
fn full_last_row(model: &CausalLm<B>, tokens: &[u32]) -> Vec<f32> {
    let f: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
    let all = values(model.forward(ids(&f)).unwrap());
    let vocab = model.config().vocab_size;
    all[all.len() - vocab..].to_vec()
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 251 + 3).collect()
}

/// Prefill then single steps, against a full forward of each prefix. The CLEX model's P is
/// 32, so the steps cross t = 1 → 2 → 3 under the recompute policy (which replays the cache
/// whenever t changes, the semantics of a full forward), and a fixed rope under the reference
/// policy. Measured max |diff| 6.0e-6 (CLEX) and 8.8e-6 (default) over logits of magnitude
/// ~1: f32 summation order between one long and many short forwards; 1e-4 is about 10x.
#[test]
fn prefill_and_steps_equal_full_forwards() {
    for (config, weights, policy) in [
        ("clex/llama_clex.json", "clex/llama_clex.safetensors", CachePolicy::Recompute),
        ("hf/llama_default.json", "hf/llama.safetensors", CachePolicy::Reference),
    ] {
        let model = load(config, weights);
        let tokens = prompt(70);
        let mut session = Session::new(&model, policy);
        let mut worst =
            check(&format!("{config} prefill"), &session.prefill(&tokens[..20]).unwrap(), &full_last_row(&model, &tokens[..20]), 1e-4);
        for n in 21..=tokens.len() {
            let got = session.step(tokens[n - 1]).unwrap();
            worst = worst.max(check(&format!("{config} step to {n}"), &got, &full_last_row(&model, &tokens[..n]), 1e-4));
        }
        assert_eq!(session.tokens(), &tokens[..]);
        assert_eq!(session.cache().len(), tokens.len());
        eprintln!("{config}: max |session − full forward| {worst:.1e}");
        // logits() returns every new row, the last of which is what prefill returns.
        let mut a = Session::new(&model, policy);
        let mut b = Session::new(&model, policy);
        let rows = a.logits(&tokens[..9]).unwrap();
        let vocab = model.config().vocab_size;
        assert_eq!(rows.len(), 9 * vocab);
        assert_eq!(&rows[8 * vocab..], &b.prefill(&tokens[..9]).unwrap()[..]);
    }
}

/// The decode loop of `clex generate` before [`Session`]: prefill, then sample, stop on EOS
/// or the length limit, push, forward the new token.
fn old_cli_loop(model: &CausalLm<B>, prompt: &[u32], n: usize, max_len: Option<usize>, params: SamplingParams) -> Vec<u32> {
    let row = |out: clex_models::ForwardOutput<B>| {
        let v = values(out.logits);
        v[v.len() - model.config().vocab_size..].to_vec()
    };
    let f = |t: &[u32]| ids(&t.iter().map(|&x| x as f32).collect::<Vec<_>>());
    let mut cache = model.new_cache(CachePolicy::Reference);
    let mut sampler = Sampler::new(params);
    let mut ids_all = prompt.to_vec();
    let mut next_logits = row(model.forward_with(f(prompt), Some(&mut cache), &ForwardOptions::default()).unwrap());
    let mut generated = Vec::new();
    for _ in 0..n {
        if max_len.is_some_and(|m| ids_all.len() >= m) {
            break;
        }
        let next = sampler.sample(&next_logits, &ids_all);
        if model.config().eos_token_ids.contains(&next) {
            break;
        }
        ids_all.push(next);
        generated.push(next);
        next_logits = row(model.forward_with(f(&[next]), Some(&mut cache), &ForwardOptions::default()).unwrap());
    }
    generated
}

#[test]
fn generate_draws_the_tokens_of_the_old_cli_loop() {
    let model = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let params = SamplingParams { temperature: 0.8, top_k: Some(40), top_p: Some(0.95), repeat_penalty: 1.1, repeat_last_n: 64, seed: 7 };
    let p = prompt(12);
    // 60 new tokens cross P = 32 and 2P (t changes under the reference cache policy).
    let want = old_cli_loop(&model, &p, 60, None, params.clone());
    let mut session = Session::new(&model, CachePolicy::Reference);
    let options = GenerateOptions {
        sampling: params.clone(),
        max_new_tokens: 60,
        max_seq_len: None,
        stop_tokens: model.config().eos_token_ids.clone(),
    };
    let mut generation = session.generate(&p, options.clone()).unwrap();
    let got: Vec<u32> = generation.by_ref().map(Result::unwrap).collect();
    assert!(want.len() > 20, "the old loop stopped after {} tokens; pick another seed", want.len());
    assert_eq!(got, want);
    let stop = generation.stop();
    assert_eq!(
        stop,
        if want.len() == 60 { Some(StopReason::MaxNewTokens) } else { Some(StopReason::StopToken(model.config().eos_token_ids[0])) }
    );
    // finish() runs the last token: the session then holds the whole sequence.
    generation.finish().unwrap();
    assert_eq!(session.tokens().len(), p.len() + want.len());

    // The default limit is P·T_max = 256 for this CLEX model; an explicit one stops earlier.
    let limited = old_cli_loop(&model, &p, 60, Some(30), params.clone());
    let mut session = Session::new(&model, CachePolicy::Reference);
    let mut generation = session.generate(&p, GenerateOptions { max_seq_len: Some(30), ..options.clone() }).unwrap();
    let got: Vec<u32> = generation.by_ref().map(Result::unwrap).collect();
    assert_eq!((got.len(), &got), (18, &limited));
    assert_eq!(generation.stop(), Some(StopReason::MaxSeqLen));
    assert_eq!(Session::new(&model, CachePolicy::Reference).default_max_seq_len(), Some(256));

    // A sampled stop token ends generation and is not yielded.
    let first = want[0];
    let mut session = Session::new(&model, CachePolicy::Reference);
    let mut generation = session.generate(&p, GenerateOptions { stop_tokens: vec![first], ..options.clone() }).unwrap();
    assert!(generation.next().is_none());
    assert_eq!(generation.stop(), Some(StopReason::StopToken(first)));

    // A prompt at the limit, and token ids outside the vocabulary, are errors.
    let mut session = Session::new(&model, CachePolicy::Reference);
    let err = session.generate(&prompt(30), GenerateOptions { max_seq_len: Some(30), ..options }).unwrap_err().to_string();
    assert!(err.contains("prompt has 30 tokens") && err.contains("30"), "{err}");
    let err = session.prefill(&[1, 256]).unwrap_err().to_string();
    assert!(err.contains("token id 256") && err.contains("256"), "{err}");
    assert!(session.prefill(&[]).is_err());
}
