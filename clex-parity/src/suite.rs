//! The checks. Each returns the worst absolute difference against the golden, so one run
//! prints the numbers for every backend and dtype side by side.

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use clex_core::ClexBackend;
use clex_models::{CachePolicy, CausalLm, Session};

use crate::fixtures::{fixture, golden, ids, max_diff, token_ids, values};

/// One comparison: its name, the worst absolute difference, and the tolerance it must meet.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was compared.
    pub name: String,
    /// max |got − want|.
    pub worst: f32,
    /// The bound.
    pub tol: f32,
}

/// Progress to stderr as checks finish (a slow backend shows where its time goes).
fn done(c: Check, t0: std::time::Instant) -> Check {
    eprintln!("  [{:6.1} s] {}: {:.2e}", t0.elapsed().as_secs_f64(), c.name, c.worst);
    c
}

/// Absolute logit tolerances per compute dtype, from the worst errors measured on flex
/// (2026-11-30; `cargo test -p clex-parity --test flex -- --nocapture` prints them; wgpu on
/// lavapipe measured f16 full forwards at 3.3e-2 too, and its 4 f16 decode steps at 2.2e-2). The goldens are f32; a half-precision model is
/// compared with them directly, so its bound is its rounding error over these tiny models
/// (weights, activations, attention and the KV cache in the half type; softmax in f32).
/// Cached decode has its own bound: the cache holds half-precision keys (re-rotated from
/// half-precision raw keys at each t change) and values, which a full forward never keeps.
///
/// f32 has a ~10x margin. The half types have 1.25-2x: a 10x bound would exceed the bugs these
/// checks are for, a cache that recomputes where the official code keeps its old entries
/// (gpt_neox logits move by 0.41, llama by 2.3) and θ(t−1) for θ(t) (1.6-8; manifest
/// `bug_sensitivity_*`). bf16's own error is near 0.41, so its decode bound alone sees only
/// the larger ones; the policy-gap check sees the rest: the Reference − Recompute difference of
/// our decode logits must equal the goldens' (largest 2.3 llama, 0.41 gpt_neox over 40 steps;
/// 1.3 and 0.25 over 4) within a fraction of it. Most of the half types' rounding (that of
/// the weights) is common to both policies and cancels: measured on flex, as a fraction of
/// the goldens' gap, f32 ≤ 1.3e-5 (bound 1e-4), f16 4.8e-2 (40 steps) / 6.8e-2 (4 steps) and
/// bf16 9.6e-2 (40 steps) (bound 0.25: 2.6-5x margin; a policy that recomputes where it
/// should keep, or swapped policies, are off by 1x-2x of the gap: 4-8x the bound).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Full-forward logits.
    pub logits: f32,
    /// Logits of cached decode steps.
    pub decode: f32,
    /// The difference between the two cache policies' decode logits against the same
    /// difference of the goldens, as a fraction of the goldens' largest difference.
    pub policy_gap: f32,
}

impl Tolerance {
    /// The bound for `dtype`.
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            // Measured: logits 3.3e-2 (hf llama/yarn), decode 4.7e-2 (llama, Recompute, 40 steps).
            DType::F16 => Tolerance { logits: 5e-2, decode: 1e-1, policy_gap: 0.25 },
            // Measured: logits 3.2e-1 (clex llama L256), decode 2.1e-1 (llama, Recompute).
            DType::BF16 => Tolerance { logits: 4e-1, decode: 4e-1, policy_gap: 0.25 },
            // Measured: logits 1.1e-5 (clex llama L256), decode 9.3e-6 (llama, Reference).
            _ => Tolerance { logits: 1e-4, decode: 1e-4, policy_gap: 1e-4 },
        }
    }
}

fn load<B: Backend>(config: &str, weights: &str, device: &B::Device, dtype: DType) -> CausalLm<B> {
    clex_models::ModelSource::from_files(&fixture(config), &[fixture(weights)])
        .and_then(|s| s.load::<B>(device, dtype))
        .unwrap_or_else(|e| panic!("loading {config}: {e}"))
}

/// transformers' logits of the tiny LLaMA (GQA) and GPT-NeoX (partial rotary, parallel
/// residual) with default and YaRN RoPE at 64 tokens.
pub fn hf_logits<B: ClexBackend>(device: &B::Device, dtype: DType) -> Vec<Check> {
    let g = golden("hf/logits.safetensors");
    let (input, _) = g.read_f32("inputs/L64").expect("golden inputs");
    let tol = Tolerance::for_dtype(dtype).logits;
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for arch in ["llama", "gpt_neox"] {
        for kind in ["default", "yarn"] {
            let model = load::<B>(&format!("hf/{arch}_{kind}.json"), &format!("hf/{arch}.safetensors"), device, dtype);
            let logits = values(model.forward(ids(&input, device)).expect("forward"));
            let (want, _) = g.read_f32(&format!("{arch}/{kind}/L64/logits")).expect("golden logits");
            out.push(done(Check { name: format!("hf {arch}/{kind} L64 logits"), worst: max_diff(&logits, &want), tol }, t0));
        }
    }
    out
}

fn clex_model<B: Backend>(name: &str, device: &B::Device, dtype: DType) -> CausalLm<B> {
    match name {
        "llama" => load("clex/llama_clex.json", "clex/llama_clex.safetensors", device, dtype),
        _ => load("clex/gpt_neox_clex.json", "clex/gpt_neox_clex.safetensors", device, dtype),
    }
}

/// The lengths of the official-CLEX golden: every `L<N>` of its manifest's results but
/// N = 300, where the reference raises (clex-models' `clex_goldens` holds the manifest and
/// the golden file to the same list). t = 1, (1,) 2, 2, 4, 8.
const CLEX_LENGTHS: [(&str, &[usize]); 2] = [("llama", &[20, 32, 33, 64, 100, 256]), ("gpt_neox", &[20, 33, 64, 100, 256])];

/// The official CLEX code's logits (P = 32, T_max = 8) at every golden length.
pub fn clex_logits<B: ClexBackend>(device: &B::Device, dtype: DType) -> Vec<Check> {
    let g = golden("clex/logits.safetensors");
    let (input, _) = g.read_f32("inputs/ids").expect("golden ids");
    let tol = Tolerance::for_dtype(dtype).logits;
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for (name, lens) in CLEX_LENGTHS {
        let mut in_golden: Vec<usize> = g
            .names()
            .iter()
            .filter_map(|n| {
                n.strip_prefix(&format!("{name}/L")).and_then(|r| r.strip_suffix("/logits")).map(|l| l.parse().expect("a length"))
            })
            .collect();
        in_golden.sort();
        assert_eq!(in_golden, lens, "{name}: the golden's lengths");
        let model = clex_model::<B>(name, device, dtype);
        for &len in lens {
            let (want, _) = g.read_f32(&format!("{name}/L{len}/logits")).expect("golden logits");
            let logits = values(model.forward(ids(&input[..len], device)).expect("forward"));
            out.push(done(Check { name: format!("clex {name} L{len} logits"), worst: max_diff(&logits, &want), tol }, t0));
        }
    }
    out
}

/// The official code's logits at N = 100 and 256 (one forward, t = 4 and 8) from inputs run
/// through the KV cache in chunks of 48 tokens (chunked prefill: chunks after the first
/// attend to cached keys with an offset causal mask, each pinned to the whole input's t).
pub fn clex_chunked<B: ClexBackend>(device: &B::Device, dtype: DType) -> Vec<Check> {
    let g = golden("clex/logits.safetensors");
    let (input, _) = g.read_f32("inputs/ids").expect("golden ids");
    let tol = Tolerance::for_dtype(dtype).logits;
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for name in ["llama", "gpt_neox"] {
        let model = clex_model::<B>(name, device, dtype);
        for len in [100, 256] {
            let (want, _) = g.read_f32(&format!("{name}/L{len}/logits")).expect("golden logits");
            let mut session = Session::new(&model, CachePolicy::Reference).with_prefill_chunk(48);
            let logits = session.logits(&token_ids(&input[..len])).expect("chunked prefill");
            out.push(done(Check { name: format!("clex {name} L{len} chunked prefill"), worst: max_diff(&logits, &want), tol }, t0));
        }
    }
    out
}

/// KV-cache decoding after a 30-token prefill, `steps` single-token steps (at most 40:
/// N = 31..70, t = 1 → 2 at step 2 → 3 at step 34) under both cache policies, against the
/// official code's cached steps (Reference) and its full forwards (Recompute).
pub fn clex_decode<B: ClexBackend>(device: &B::Device, dtype: DType, steps: usize) -> Vec<Check> {
    assert!((1..=40).contains(&steps), "the golden has 40 decode steps");
    let g = golden("clex/logits.safetensors");
    let Tolerance { decode: tol, policy_gap, .. } = Tolerance::for_dtype(dtype);
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for name in ["llama", "gpt_neox"] {
        let model = clex_model::<B>(name, device, dtype);
        let input = token_ids(&g.read_f32(&format!("{name}/decode/input_ids")).expect("golden decode ids").0);
        let mut runs = Vec::new();
        for (policy, key) in [(CachePolicy::Reference, "step_logits"), (CachePolicy::Recompute, "full_recompute_last_logits")] {
            let (want, _) = g.read_f32(&format!("{name}/decode/{key}")).expect("golden decode logits");
            let mut session = Session::new(&model, policy);
            session.prefill(&input[..30]).expect("prefill");
            let mut got = Vec::new();
            for &id in &input[30..30 + steps] {
                got.extend(session.step(id).expect("decode step"));
            }
            let worst = max_diff(&got, &want[..got.len()]);
            out.push(done(Check { name: format!("clex {name} decode {policy:?} ({steps} steps)"), worst, tol }, t0));
            runs.push((got, want));
        }
        // The policies differ once t changes (step 2); before that their gap is the goldens'
        // noise (~1e-6), which no relative bound can be set against.
        if steps > 2 {
            let [(ours_ref, want_ref), (ours_rec, want_rec)] = &runs[..] else { unreachable!("two policies") };
            let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f32>>();
            let want_gap = gap(&want_ref[..ours_ref.len()], &want_rec[..ours_ref.len()]);
            let scale = want_gap.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let worst = max_diff(&gap(ours_ref, ours_rec), &want_gap);
            let name = format!("clex {name} decode Reference − Recompute (of {scale:.2})");
            out.push(done(Check { name, worst, tol: policy_gap * scale }, t0));
        }
    }
    out
}

/// The official CLEX code's Phi-2 and Mixtral (`clex_arch/`, P = 32, T_max = 8).
fn arch_model<B: Backend>(arch: &str, device: &B::Device, dtype: DType) -> CausalLm<B> {
    load(&format!("clex_arch/{arch}_clex.json"), &format!("clex_arch/{arch}_clex.safetensors"), device, dtype)
}

/// The architectures checked at `dtype`: Phi-2 at every dtype, Mixtral in f32 only. Its
/// routing is discontinuous: the goldens' smallest gap between a token's k-th and (k+1)-th
/// router logit is 1.05e-3 (manifest `router_min_topk_logit_margin_over_all_golden_forwards`),
/// below the rounding of a half-precision router input, and a token sent to another expert
/// moves the logits by O(1) (measured on flex against the f32 goldens: f16 2.8 at L256, bf16
/// 2.7 from L20 on). A half-precision Mixtral is a different model to within its routing.
fn arch_names(dtype: DType) -> &'static [&'static str] {
    if dtype == DType::F32 { &["phi2", "mixtral"] } else { &["phi2"] }
}

/// The Phi-2 and Mixtral goldens' lengths (t = 1, 1, 2, 2, 4, 8); clex-models'
/// `arch_goldens` holds the manifest and the golden file to the same list.
const ARCH_LENGTHS: [usize; 6] = [20, 32, 33, 64, 100, 256];

/// The official CLEX code's CLEX-Phi-2 and CLEX-Mixtral logits at every golden length
/// (Mixtral in f32 only, see [`arch_names`]).
pub fn arch_logits<B: ClexBackend>(device: &B::Device, dtype: DType) -> Vec<Check> {
    let g = golden("clex_arch/arch_logits.safetensors");
    let (input, _) = g.read_f32("inputs/ids").expect("golden ids");
    let tol = Tolerance::for_dtype(dtype).logits;
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for &arch in arch_names(dtype) {
        let model = arch_model::<B>(arch, device, dtype);
        for len in ARCH_LENGTHS {
            let (want, _) = g.read_f32(&format!("{arch}/L{len}/logits")).expect("golden logits");
            let logits = values(model.forward(ids(&input[..len], device)).expect("forward"));
            out.push(done(Check { name: format!("clex {arch} L{len} logits"), worst: max_diff(&logits, &want), tol }, t0));
        }
    }
    out
}

/// [`clex_decode`] for CLEX-Phi-2 and CLEX-Mixtral: `steps` cached steps after a 30-token
/// prefill under both cache policies, against the official cached steps and full forwards.
pub fn arch_decode<B: ClexBackend>(device: &B::Device, dtype: DType, steps: usize) -> Vec<Check> {
    assert!((1..=40).contains(&steps), "the golden has 40 decode steps");
    let g = golden("clex_arch/arch_logits.safetensors");
    let tol = Tolerance::for_dtype(dtype).decode;
    let t0 = std::time::Instant::now();
    let mut out = Vec::new();
    for &arch in arch_names(dtype) {
        let model = arch_model::<B>(arch, device, dtype);
        let input = token_ids(&g.read_f32(&format!("{arch}/decode/input_ids")).expect("golden decode ids").0);
        for (policy, key) in [(CachePolicy::Reference, "step_logits"), (CachePolicy::Recompute, "full_recompute_last_logits")] {
            let (want, _) = g.read_f32(&format!("{arch}/decode/{key}")).expect("golden decode logits");
            let mut session = Session::new(&model, policy);
            session.prefill(&input[..30]).expect("prefill");
            let mut got = Vec::new();
            for &id in &input[30..30 + steps] {
                got.extend(session.step(id).expect("decode step"));
            }
            let worst = max_diff(&got, &want[..got.len()]);
            out.push(done(Check { name: format!("clex {arch} decode {policy:?} ({steps} steps)"), worst, tol }, t0));
        }
    }
    out
}

/// Attention alone, through the backend's own routing (`ClexBackend::grouped_attention`: burn's
/// fused op with `is_causal` where it means the same on every backend, the explicit path with
/// a boolean mask elsewhere, our kernel on flex), against the explicit path on flex in f32
/// over the same dtype-rounded inputs: 6 query heads on 2 KV heads of 16, a prefill (fused:
/// `is_causal`), a decode step (fused), a chunk after 37 cached keys (offset causal mask),
/// left-padded rows and a sliding window (boolean masks), and no mask at all. Bound: f32
/// 1e-5 (outputs are convex combinations of values in [−1, 1]); half types: about four times
/// their rounding of an output near 1, 2e-3 (f16) and 1.5e-2 (bf16). Measured worst: f16 2.4e-4
/// flex, 4.2e-4 tch, 5.2e-4 wgpu (lavapipe); bf16 1.9e-3 flex, 3.5e-3 tch.
pub fn attention_paths<B: ClexBackend>(device: &B::Device, dtype: DType) -> Vec<Check> {
    use burn::tensor::{FloatDType, Tensor, TensorData};
    use clex_core::attention::{KeyMask, attention, explicit};
    type Flex = burn_flex::Flex;
    let tol = match dtype {
        DType::F16 => 2e-3,
        DType::BF16 => 1.5e-2,
        _ => 1e-5,
    };
    let half = match dtype {
        DType::F16 => Some(FloatDType::F16),
        DType::BF16 => Some(FloatDType::BF16),
        _ => None,
    };
    let t0 = std::time::Instant::now();
    // Deterministic values in [−1, 1), rounded to `dtype` as the backend will hold them.
    let data = |shape: [usize; 4], seed: u32| -> Vec<f32> {
        let n: usize = shape.iter().product();
        let raw: Vec<f32> = (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(2_246_822_519)) % 4001) as f32 / 2000.0 - 1.0)
            .collect();
        let t = Tensor::<Flex, 4>::from_data(TensorData::new(raw, shape), &Default::default());
        values(match half {
            Some(h) => t.cast(h).cast(FloatDType::F32),
            None => t,
        })
    };
    let on = |v: &[f32], shape: [usize; 4]| -> Tensor<B, 4> {
        let t = Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), shape), device);
        match half {
            Some(h) => t.cast(h),
            None => t,
        }
    };
    let reference = |v: &[f32], shape: [usize; 4]| Tensor::<Flex, 4>::from_data(TensorData::new(v.to_vec(), shape), &Default::default());
    let cases = [
        ("prefill, causal", 37, 37, KeyMask::causal()),
        ("decode step", 1, 53, KeyMask::causal()),
        ("chunk after 37 cached keys", 16, 53, KeyMask::causal()),
        ("left-padded rows", 37, 37, KeyMask::causal_padded(&[0, 5])),
        ("sliding window 9", 16, 53, KeyMask::causal().with_window(Some(9))),
        ("no mask", 16, 53, KeyMask::default()),
    ];
    let mut out = Vec::new();
    for (i, (name, seq, n, mask)) in cases.into_iter().enumerate() {
        let (qs, ks) = ([2, seq, 6, 16], [2, n, 2, 16]);
        let (q, k, v) = (data(qs, 3 * i as u32), data(ks, 3 * i as u32 + 1), data(ks, 3 * i as u32 + 2));
        let mut got = values(attention(on(&q, qs), on(&k, ks), on(&v, ks), &mask));
        let mut want = values(explicit(reference(&q, qs), reference(&k, ks), reference(&v, ks), &mask));
        // A pad query sees no key: what it returns is undefined (zeros from one path, the
        // mean of the values from another) and unused, so it is left out.
        for (row, &pad) in mask.pads.iter().enumerate() {
            for i in 0..pad.saturating_sub(n - seq) {
                let at = (row * seq + i) * 6 * 16;
                got[at..at + 6 * 16].fill(0.0);
                want[at..at + 6 * 16].fill(0.0);
            }
        }
        out.push(done(Check { name: format!("attention: {name}"), worst: max_diff(&got, &want), tol }, t0));
    }
    out
}

/// The golden logits at `dtype` ([`hf_logits`], [`clex_logits`], [`arch_logits`]), plus
/// `decode_steps` of cached decoding ([`clex_decode`], [`arch_decode`]; none when 0).
pub fn suite<B: ClexBackend>(device: &B::Device, dtype: DType, decode_steps: usize) -> Vec<Check> {
    let mut checks = attention_paths::<B>(device, dtype);
    checks.extend(hf_logits::<B>(device, dtype));
    checks.extend(clex_logits::<B>(device, dtype));
    checks.extend(clex_chunked::<B>(device, dtype));
    checks.extend(arch_logits::<B>(device, dtype));
    if decode_steps > 0 {
        checks.extend(clex_decode::<B>(device, dtype, decode_steps));
        checks.extend(arch_decode::<B>(device, dtype, decode_steps));
    }
    checks
}
