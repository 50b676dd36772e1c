//! Mixed precision on the tiny CLEX fixture: f16 gradients come back unscaled (they match the
//! f32 step's within f16's error, not 1024 times it), an f16 step whose scaled gradients
//! overflow is skipped without touching the weights or AdamW's state and the next step
//! proceeds, and a bf16 model saved as an HF directory reloads bit for bit.

mod common;

use std::path::PathBuf;

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::Optimizer;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn::train::TrainStep;
use clex_train::batch::{LmBatch, LmBatcher, LmItem};
use clex_train::precision::{F16_LOSS_SCALE, Precision};
use clex_train::step::{ClexLm, StepSettings};
use clex_train::trainer::{self, TrainOptions};
use common::{AD, Flex};

const LEN: usize = 64;

/// Bound on |s − 1| for the fitted scale s of f16 gradients on f32's: measured 1.0e-3
/// (`f16_gradients_are_unscaled`); 10x margin. An unscale off by 5% gives |s − 1| = 5e-2.
const TOL_SCALE: f64 = 1e-2;

fn settings(precision: Precision) -> StepSettings {
    StepSettings { precision, ..StepSettings::default() }
}

/// Two windows whose draw has t > 1 (the ODE is in the graph).
fn batch(m: &ClexLm<AD>) -> LmBatch<AD> {
    let items: Vec<LmItem> = common::windows(2, LEN).into_iter().enumerate().map(|(index, tokens)| LmItem { index, tokens }).collect();
    (0..).map(|seed| LmBatcher { seed }.batch(items.clone(), &Default::default())).find(|b| m.draw(b.key, LEN).unwrap().t > 1).unwrap()
}

/// Every float parameter's bits, in visiting order.
fn bits<B: Backend, M: Module<B>>(m: &M) -> Vec<(DType, Vec<u8>)> {
    struct V(Vec<(DType, Vec<u8>)>);
    impl<B: Backend> ModuleVisitor<B> for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let d = p.val().into_data();
            self.0.push((d.dtype, d.as_bytes().to_vec()));
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

#[test]
fn f16_gradients_are_unscaled() {
    let m32 = common::model(settings(Precision::F32));
    let b = batch(&m32);
    let g32 = common::gradients_of(&m32, &TrainStep::step(&m32, b.clone()).grads);
    let m16 = common::model(settings(Precision::F16));
    let g16 = common::gradients_of(&m16, &TrainStep::step(&m16, b).grads);
    let worst = common::worst_relative(&g16, &g32);
    eprintln!("f16 vs f32 step: worst gradient error of each tensor's largest: {worst}");
    // Measured 6.9e-3 (7.3e-3 for U and D, whose θ gradient comes back through the f16
    // model); 10x margin. A skipped unscale would be off by a factor of 1024.
    assert!(worst.rest < 7e-2 && worst.ode < 7e-2, "f16 gradients differ from f32's: {worst}");
    // The per-element tolerance above would pass a constant scale error of a few percent (an
    // unscale by a slightly wrong factor). The least-squares scale of the f16 gradients on
    // the f32 ones, over every value, sees it: s = Σ g16·g32 / Σ g32².
    let (mut dot, mut sq) = (0.0f64, 0.0f64);
    for ((_, a), (_, b)) in g16.iter().zip(&g32) {
        for (x, y) in a.iter().zip(b) {
            dot += *x as f64 * *y as f64;
            sq += *y as f64 * *y as f64;
        }
    }
    let s = dot / sq;
    eprintln!("f16 vs f32 step: fitted gradient scale {s:.6} (|s - 1| = {:.2e})", (s - 1.0).abs());
    assert!((s - 1.0).abs() < TOL_SCALE, "f16 gradients are {s} times f32's");
}

/// Multiplies the final norm's weight by `factor` (a fresh leaf, so it still gets a gradient).
struct BlowUpFinalNorm {
    factor: f32,
    path: Vec<String>,
}

impl ModuleMapper<AD> for BlowUpFinalNorm {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.path.first().is_some_and(|p| p == "final_norm") {
            Tensor::from_inner(tensor.inner() * self.factor).require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[test]
fn f16_overflow_skips_the_update_and_the_next_step_proceeds() {
    let normal = common::model(settings(Precision::F16));
    let b = batch(&normal);
    // A final norm weight of ~2000 makes the hidden states ~2000 times larger: the loss stays
    // finite, but the LM head's scaled gradient passes f16's 65504.
    let factor = 2000.0;
    let blown = ClexLm::new(normal.lm.clone().map(&mut BlowUpFinalNorm { factor, path: Vec::new() }), settings(Precision::F16));
    // In f32 the same gradient is finite and times the loss scale beyond f16's range: the
    // skip below is f16 overflow, not a broken model.
    let as_f32 = ClexLm::new(blown.lm.clone(), settings(Precision::F32));
    let g32 = common::gradients_of(&as_f32, &TrainStep::step(&as_f32, b.clone()).grads);
    let largest = g32.iter().flat_map(|(_, g)| g.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("final norm x{factor}: largest f32 gradient {largest:.3e}, x{F16_LOSS_SCALE} = {:.3e}", largest * F16_LOSS_SCALE);
    assert!(largest.is_finite() && largest * F16_LOSS_SCALE > 65504.0, "largest f32 gradient {largest}");

    let out = TrainStep::step(&blown, b.clone());
    let loss: f32 = out.item.loss.clone().into_scalar();
    assert!(loss.is_finite(), "the overflow is in the backward, the loss is {loss}");
    assert!(out.grads.is_empty(), "an overflowing f16 step hands the optimizer no gradients");
    // The trainer's AdamW as `cargo xtask train` sets it (no weight decay, clip at norm 1).
    let opts = TrainOptions::tiny(PathBuf::new());
    let mut optim = trainer::optimizer::<AD, ClexLm<AD>>(&opts);
    let before = bits(&blown);
    let after = optim.step(1e-3, blown, out.grads);
    assert!(bits(&after) == before, "a skipped update leaves every weight as it was");
    assert!(optim.to_record().is_empty(), "a skipped update leaves AdamW's state empty");

    // The next (normal) step updates, and exactly as a first step would: the skip left no
    // trace in AdamW (its step count included).
    let out = TrainStep::step(&normal, b.clone());
    assert!(!out.grads.is_empty());
    let stepped = optim.step(1e-3, normal.clone(), out.grads);
    assert!(bits(&stepped) != bits(&normal), "the next step changes the weights");
    assert!(!optim.to_record().is_empty());
    let mut fresh = trainer::optimizer::<AD, ClexLm<AD>>(&opts);
    let first = fresh.step(1e-3, normal.clone(), TrainStep::step(&normal, b).grads);
    assert!(bits(&stepped) == bits(&first), "after a skipped step the optimizer continues as if it never happened");
}

#[test]
fn bf16_model_saves_and_reloads_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/clex");
    let load = |dtype| {
        clex_models::ModelSource::from_files(&fixture.join("llama_clex.json"), &[fixture.join("llama_clex.safetensors")])
            .and_then(|s| s.load::<Flex>(&Default::default(), dtype))
            .unwrap()
    };
    let m = load(DType::BF16);
    clex_models::save_model(&m, dir.path()).unwrap();
    // The file holds bf16 weights (the CLEX layer stays f32, docs/CLEX.md §3.5).
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for (name, t) in header.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__") {
        let want = if name.contains("clex_layer") { "F32" } else { "BF16" };
        assert_eq!(t["dtype"], want, "{name}");
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    // Reloaded under flex: the same bits, and those bits are the f32 fixture rounded to bf16
    // to nearest even, by `bf16_bits` below (bit arithmetic checked on hand-made values; the
    // save path rounds with the `half` crate, so the two are independent).
    let again = clex_models::ModelSource::open(dir.path()).and_then(|s| s.load::<Flex>(&Default::default(), DType::BF16)).unwrap();
    let (a, b) = (bits(&m), bits(&again));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "a saved and reloaded bf16 model is bit-identical");
    let f32s = bits(&load(DType::F32));
    let mut checked = 0;
    for ((dtype, got), (_, f)) in a.iter().zip(&f32s) {
        if *dtype != DType::BF16 {
            assert_eq!(got, f, "f32 parameters (the CLEX layer) are kept as they are");
            continue;
        }
        let rounded: Vec<u8> = f.chunks(4).flat_map(|c| bf16_bits(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()).collect();
        assert!(*got == rounded, "bf16 weights are the f32 weights rounded to nearest");
        checked += 1;
    }
    assert!(checked > 10, "{checked} bf16 tensors");
}

/// f32 → bf16 bits, rounding to nearest with ties to even: add 0x7FFF plus the lowest kept
/// bit, then drop the low 16 bits. A carry out of the mantissa correctly steps the exponent
/// (and overflows to infinity). NaN is not handled: the fixture has none.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn bf16_reference_rounds_to_nearest_even() {
    // (f32 bits, bf16 bits) worked out by hand from the bit layout.
    let cases: [(u32, u16); 9] = [
        (0x3F80_0000, 0x3F80), // 1.0, exact
        (0x3F80_8000, 0x3F80), // 1 + 2^-8: a tie between 0x3F80 and 0x3F81, to the even 0x3F80
        (0x3F81_8000, 0x3F82), // a tie between 0x3F81 and 0x3F82, to the even 0x3F82 (truncation: 0x3F81)
        (0x3F80_C000, 0x3F81), // above half: up (truncation would give 0x3F80)
        (0x3F80_7FFF, 0x3F80), // below half: down
        (0xBF80_C000, 0xBF81), // the same, negative: rounds up in magnitude
        (0x0001_C000, 0x0002), // a subnormal, rounded up within the subnormals
        (0x007F_FFFF, 0x0080), // the largest subnormal rounds up to the smallest normal
        (0x7F7F_FFFF, 0x7F80), // f32::MAX rounds to +infinity
    ];
    for (f, want) in cases {
        let got = bf16_bits(f32::from_bits(f));
        assert!(got == want, "{f:#010x} rounds to {got:#06x}, not {want:#06x}");
    }
}
