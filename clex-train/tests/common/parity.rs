//! The training half of the backend parity suite (moved here from clex-parity, which no
//! longer depends on clex-train): a few CLEX train steps on the tiny CLEX-LLaMA, generic over
//! the backend, and the check that another backend's losses follow those of flex (the
//! reference, `common::AD`). `tests/backends.rs` runs it on flex and wgpu,
//! `tests/backends_tch.rs` on libtorch.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::TrainStep;
use clex_core::ClexBackend;
use clex_models::CausalLm;
use clex_train::batch::{LmBatch, LmBatcher, LmItem};
use clex_train::precision::Precision;
use clex_train::step::{ClexLm, StepSettings};

/// The tiny CLEX-LLaMA fixture (P = 32, T_max = 8) on any backend, f32.
pub fn clex_llama<B: Backend>(device: &B::Device) -> CausalLm<B> {
    clex_models::ModelSource::from_files(&super::fixture("llama_clex.json"), &[super::fixture("llama_clex.safetensors")])
        .and_then(|s| s.load::<B>(device, DType::F32))
        .unwrap_or_else(|e| panic!("loading clex/llama_clex.json: {e}"))
}

fn batch<B: Backend>(device: &B::Device) -> LmBatch<B> {
    let text =
        b"To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune";
    let items = (0..2).map(|r| LmItem { index: r, tokens: text[r * 40..r * 40 + 65].iter().map(|&b| u32::from(b)).collect() }).collect();
    LmBatcher { seed: 3 }.batch(items, device)
}

/// The loss before each of `steps` AdamW steps of the CLEX train step (sampled t and
/// fractional positions, ODE in the graph) on a fixed batch of the tiny CLEX-LLaMA, through
/// the trainer's own `TrainStep` (so f16's loss scaling is exercised), with the model after.
pub fn train_run<B: AutodiffBackend + ClexBackend>(device: &B::Device, steps: usize, precision: Precision) -> (Vec<f32>, ClexLm<B>) {
    let mut model = ClexLm::new(clex_llama::<B>(device), StepSettings { precision, ..StepSettings::default() });
    let b = batch::<B>(device);
    assert!(model.draw(b.key, 64).expect("a CLEX model draws").t > 1, "the fixed batch runs the ODE");
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<B, ClexLm<B>>();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let out = TrainStep::step(&model, b.clone());
        losses.push(out.item.loss.into_data().convert::<f32>().to_vec::<f32>().expect("f32 after convert")[0]);
        model = optim.step(3e-3, model, out.grads);
    }
    (losses, model)
}

/// The losses of [`train_run`] in f32.
pub fn train_losses<B: AutodiffBackend + ClexBackend>(device: &B::Device, steps: usize) -> Vec<f32> {
    train_run::<B>(device, steps, Precision::F32).0
}

/// Four train steps at `precision` on `backend` give flex's losses for the same precision:
/// max |diff| < `tol`.
pub fn check_train_steps_against_flex<B: AutodiffBackend + ClexBackend>(backend: &str, device: &B::Device, precision: Precision, tol: f32) {
    let (got, _) = train_run::<B>(device, 4, precision);
    let (want, _) = train_run::<super::AD>(&Default::default(), 4, precision);
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{} train losses: {backend} {got:?}, flex {want:?}; max |diff| {worst:.2e}", precision.as_str());
    assert!(worst < tol, "{}: {backend} {got:?} vs flex {want:?}", precision.as_str());
}
