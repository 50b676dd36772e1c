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
    let gu = clex.proj_func.ode_up_proj.grad(&grads).expect("U gets a gradient");
    let gd = clex.proj_func.ode_down_proj.grad(&grads).expect("D gets a gradient");
    assert!(gu.abs().max().into_scalar() > 0.0 && gd.abs().max().into_scalar() > 0.0);
    assert!(clex.inv_freq.grad(&grads).is_none(), "inv_freq is a frozen buffer");

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
