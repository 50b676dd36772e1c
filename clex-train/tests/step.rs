//! The CLEX train step on the tiny CLEX-LLaMA fixture (P = 32, T_max = 8): the draw follows
//! docs/CLEX.md §5, gradients reach U and D through the ODE node, and a few AdamW steps lower the
//! loss on a fixed batch.

mod common;

use burn::data::dataloader::batcher::Batcher;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use clex_train::batch::{LmBatch, LmBatcher, LmItem};
use clex_train::step::{ClexLm, StepSettings};
use common::AD;

fn model() -> ClexLm<AD> {
    common::model(StepSettings::default())
}

fn batch(seed: u64) -> LmBatch<AD> {
    let text =
        b"To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune";
    let items = (0..2).map(|r| LmItem { index: r, tokens: text[r * 40..r * 40 + 65].iter().map(|&b| b as u32).collect() }).collect();
    LmBatcher { seed }.batch(items, &Default::default())
}

#[test]
fn draws_follow_the_spec() {
    let m = model();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let b = batch(seed);
        let d = m.draw(b.key, 64).unwrap();
        assert_eq!(m.draw(b.key, 64).unwrap(), d, "the key fixes the draw");
        assert!((1..=8).contains(&d.t));
        seen.insert(d.t);
        // L = 64, P = 32: s = 2, positions span [0, 32t), last = 32t − 1.
        assert_eq!(d.positions.len(), 64);
        assert_eq!(d.positions[0], 0.0);
        assert_eq!(d.positions[63], (32 * d.t - 1) as f32);
        assert!(d.positions[1..63].windows(2).all(|w| w[0] < w[1]));
        assert!(d.positions[1..63].iter().all(|&p| p > 0.0 && (p * 2.0).fract() == 0.0), "multiples of 1/s");
    }
    assert!(seen.len() >= 6, "t covers its range: {seen:?}");
    let (k1, k2) = (batch(1).key, batch(2).key);
    assert_ne!(k1, k2);
}

#[test]
fn gradients_reach_the_ode_and_loss_goes_down() {
    let mut m = model();
    // A batch whose draw has t > 1, so the ODE runs.
    let b = (0..).map(batch).find(|b| m.draw(b.key, 64).unwrap().t > 1).unwrap();
    let (loss, t) = m.train_loss(&b);
    assert!(t.unwrap() > 1);
    let first = loss.clone().into_scalar();
    let grads = loss.backward();
    let clex = m.lm.clex_layer.as_ref().unwrap();
    let gu = clex.up().grad(&grads).expect("U gets a gradient");
    let gd = clex.down().grad(&grads).expect("D gets a gradient");
    assert!(gu.abs().max().into_scalar() > 0.0 && gd.abs().max().into_scalar() > 0.0);
    assert!(clex.inv_freq().grad(&grads).is_none(), "inv_freq is a frozen buffer");

    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<AD, ClexLm<AD>>();
    let mut losses = vec![first];
    for _ in 0..8 {
        let (loss, _) = m.train_loss(&b);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(3e-3, m, grads);
        losses.push(m.train_loss(&b).0.into_scalar());
    }
    assert!(losses[8] < losses[0] - 0.5, "loss on a fixed batch should fall: {losses:?}");
    // The CLEX parameters moved, and the θ table follows them.
    let after = m.lm.clex_layer.as_ref().unwrap();
    assert_ne!(after.weights().down, model().lm.clex_layer.as_ref().unwrap().weights().down);
}

/// Inference (and burn-train's validation, on `valid()` of the stepped model) reads θ from the
/// CLEX layer's table, solved once. After optimizer steps it must be the table of the new
/// weights: a table kept from before the steps would still give the old θ.
#[test]
fn inference_theta_follows_the_optimizer() {
    use burn::module::AutodiffModule;
    use clex_core::clex::ThetaTable;
    let mut m = model();
    let t = 4;
    let before = values(m.lm.clex_layer.as_ref().unwrap().theta(t));
    let b = (0..).map(batch).find(|b| m.draw(b.key, 64).unwrap().t > 1).unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<AD, ClexLm<AD>>();
    for _ in 0..2 {
        let (loss, _) = m.train_loss(&b);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(3e-3, m, grads);
    }
    let clex = m.lm.clex_layer.as_ref().unwrap();
    let after = values(clex.theta(t));
    assert_ne!(after, before, "θ({t}) must follow the stepped U and D");
    let cfg = clex.config();
    let solved = ThetaTable::solve(&clex.weights(), &cfg.spec(), cfg.params.max_factor);
    assert_eq!(after, solved.row(t), "the table is the one of the current weights");
    let valid = m.valid();
    assert_eq!(values(valid.lm.clex_layer.as_ref().unwrap().theta(t)), after, "validation sees the new θ");
}

/// The learner summary prints the trained module with `Display` (burn-train calls
/// `model.to_string()`): it shows the model's shape, not the raw config.json nor every tensor.
#[test]
fn learner_summary_shows_the_model_shape() {
    let summary = model().to_string();
    eprintln!("{summary}");
    for want in ["architecture: llama", "layers: 2", "hidden: 64", "heads: 4", "kv_heads: 2", "vocab: 256", "rope: clex"] {
        assert!(summary.contains(want), "the summary lacks {want:?}:\n{summary}");
    }
    for unwanted in ["rope_scaling", "num_hidden_layers", "q_proj"] {
        assert!(!summary.contains(unwanted), "the summary shows {unwanted:?}:\n{summary}");
    }
}

fn values<B: burn::tensor::backend::Backend>(t: burn::tensor::Tensor<B, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}
