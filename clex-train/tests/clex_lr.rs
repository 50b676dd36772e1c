//! The ODE's own learning rate (`clex_lr`, `--clex-lr`): U and D step at `clex_lr / lr`
//! times the scheduled rate and every other weight exactly as without it, on the optimizer
//! itself (the tiny CLEX fixture, single- and multi-device gradients) and through a whole
//! run (the option reaches `train()`'s optimizer); `clex_lr = lr` steps bit for bit as one
//! group; bad values and models without a CLEX layer are refused naming the flag.
//!
//! AdamW's first step moves each element by lr·g/(|g| + ε) (bias-corrected moments of one
//! gradient: m̂ = g, v̂ = g²), so from the same weights and gradient the ODE's update at
//! `clex_lr = k·lr` is k times the one-group update element by element, up to f32 rounding,
//! and each element moves by ≈ the rate itself wherever |g| ≫ ε = 1e-8.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{MultiGradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::backend::DeviceOps;
use burn::tensor::{DType, Tensor};
use burn::train::TrainStep;
use clex_train::batch::{LmBatch, LmBatcher, LmItem};
use clex_train::param_groups::{OdeLrGroups, ode_lr_ratio};
use clex_train::preset::RopeChoice;
use clex_train::step::{ClexLm, StepSettings};
use clex_train::trainer::{self, TrainOptions, train};
use common::{AD, Flex, small_corpus};

const LEN: usize = 64;

/// f32's spacing at `x` (one unit in the last place).
fn ulp(x: f64) -> f64 {
    let x = x.abs() as f32;
    (f32::from_bits(x.to_bits() + 1) - x) as f64
}

/// Every float parameter's values by path (`lm.clex_layer.proj_func.ode_up_proj`, ...).
fn weights<B: Backend, M: Module<B>>(m: &M) -> BTreeMap<String, Vec<f32>> {
    struct V(Vec<String>, BTreeMap<String, Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for V {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap();
            self.1.insert(self.0.join("."), values);
        }
    }
    let mut v = V(Vec::new(), BTreeMap::new());
    m.visit(&mut v);
    v.1
}

fn is_ode(path: &str) -> bool {
    path.ends_with("ode_up_proj") || path.ends_with("ode_down_proj")
}

/// Checks the updates `before → one` (one group, rate `lr`) and `before → scaled` (the ODE at
/// `k·lr`): every weight but U and D identical bit for bit; U and D moved, the one-group
/// update by at most `lr` per element and by ≈ `lr` at its largest (Adam's first step), the
/// scaled one by k times it element by element. Both divide the same gradient by the same
/// moments, so they differ only by the rounding of each updated weight (half an ulp of the
/// weight, times 1 + k over the two) and of lr·x (a few f32 epsilons of the step).
fn check_first_step(
    what: &str,
    before: &BTreeMap<String, Vec<f32>>,
    one: &BTreeMap<String, Vec<f32>>,
    scaled: &BTreeMap<String, Vec<f32>>,
    lr: f64,
    k: f64,
) {
    assert_eq!(one.keys().collect::<Vec<_>>(), scaled.keys().collect::<Vec<_>>(), "{what}: parameters");
    let mut ode_seen = 0;
    for (path, w0) in before {
        let (w1, wk) = (&one[path], &scaled[path]);
        if !is_ode(path) {
            assert!(w1 == wk, "{what}: {path} must step exactly as in one group");
            continue;
        }
        ode_seen += 1;
        let d1: Vec<f64> = w1.iter().zip(w0).map(|(a, b)| *a as f64 - *b as f64).collect();
        let dk: Vec<f64> = wk.iter().zip(w0).map(|(a, b)| *a as f64 - *b as f64).collect();
        let largest = d1.iter().fold(0.0f64, |m, d| m.max(d.abs()));
        let widest = w0.iter().fold(0.0f64, |m, w| m.max(w.abs() as f64)) + lr.max(k * lr);
        let rounding = 0.5 * (1.0 + k) * ulp(widest) + 4.0 * f32::EPSILON as f64 * k * lr;
        // The test can fail: a ratio that did not reach the ODE is off by |1 − k|·lr.
        assert!((1.0 - k).abs() * lr > 100.0 * rounding, "{what}: {path}: steps too small to tell k = {k}");
        let off = d1.iter().zip(&dk).map(|(a, b)| (b - k * a).abs()).fold(0.0f64, f64::max);
        eprintln!("{what}: {path}: one-group step at most {largest:.4e} (lr {lr:.1e}); scaled off by {off:.2e} (bound {rounding:.2e})");
        // Adam's first step: |Δ| = lr·|g|/(|g| + ε) ≤ lr, and ≈ lr wherever |g| ≫ ε.
        assert!(largest <= lr * (1.0 + 1e-3) && largest >= lr * 0.99, "{what}: {path}: one-group step {largest}, want ≈ lr {lr}");
        assert!(off <= rounding, "{what}: {path}: the ODE step is not {k} times the one-group step: off by {off:.3e} > {rounding:.3e}");
    }
    assert_eq!(ode_seen, 2, "{what}: U and D among the parameters");
}

/// Two windows whose draw has t > 1 (the ODE is in the graph).
fn batch(m: &ClexLm<AD>) -> LmBatch<AD> {
    let items: Vec<LmItem> = common::windows(2, LEN).into_iter().enumerate().map(|(index, tokens)| LmItem { index, tokens }).collect();
    (0..).map(|seed| LmBatcher { seed }.batch(items.clone(), &Default::default())).find(|b| m.draw(b.key, LEN).unwrap().t > 1).unwrap()
}

/// The trainer's AdamW as `cargo xtask train` sets it, with the ODE at `ratio` times the rate.
fn groups(ratio: Option<f64>) -> OdeLrGroups<AD> {
    OdeLrGroups::new(trainer::optimizer(&TrainOptions::tiny(PathBuf::new())), ratio)
}

#[test]
fn the_ode_steps_at_its_own_rate_and_the_rest_as_in_one_group() {
    let m = common::model(StepSettings::default());
    let b = batch(&m);
    let lr = 1e-3;
    let step = |ratio: Option<f64>| weights(&groups(ratio).step(lr, m.clone(), TrainStep::step(&m, b.clone()).grads));
    let before = weights(&m);
    let one = step(None);
    assert!(step(Some(1.0)) == one, "clex_lr = lr steps bit for bit as one group");
    for k in [0.1, 3.0] {
        check_first_step(&format!("ratio {k}"), &before, &one, &step(Some(k)), lr, k);
    }
}

#[test]
fn multi_device_gradients_are_grouped_too() {
    // burn's other multi-device strategies hand the optimizer each device's gradients; one
    // device's share through `step_multi` must step as `step` does.
    let m = common::model(StepSettings::default());
    let b = batch(&m);
    let lr = 1e-3;
    let device: burn::tensor::Device<AD> = Default::default();
    let step = |ratio: Option<f64>| {
        let grads = MultiGradientsParams { grads: vec![(TrainStep::step(&m, b.clone()).grads, device.id())] };
        weights(&groups(ratio).step_multi(lr, m.clone(), grads))
    };
    let single = weights(&groups(Some(0.1)).step(lr, m.clone(), TrainStep::step(&m, b.clone()).grads));
    let (one, scaled) = (step(None), step(Some(0.1)));
    assert!(scaled == single, "step_multi with one device's gradients steps as step does");
    check_first_step("step_multi, ratio 0.1", &weights(&m), &one, &scaled, lr, 0.1);
}

#[test]
fn the_state_stays_one_record_keyed_by_parameter() {
    // Checkpoints keep today's record: both groups' AdamW states in one map, restored into a
    // fresh optimizer that then steps exactly as the original.
    let m = common::model(StepSettings::default());
    let b = batch(&m);
    let mut optim = groups(Some(0.1));
    let grads = TrainStep::step(&m, b.clone()).grads;
    let trained = grads.len();
    let m1 = optim.step(1e-3, m.clone(), grads);
    let record = optim.to_record();
    assert_eq!(record.len(), trained, "one state per parameter with a gradient, U and D included");
    let clex = m.lm.clex_layer.as_ref().unwrap();
    assert!(record.contains_key(&clex.up().id) && record.contains_key(&clex.down().id), "U's and D's states");
    let mut resumed = groups(Some(0.1)).load_record(record);
    let a = optim.step(2e-3, m1.clone(), TrainStep::step(&m1, b.clone()).grads);
    let r = resumed.step(2e-3, m1.clone(), TrainStep::step(&m1, b).grads);
    assert!(weights(&a) == weights(&r), "a restored optimizer continues both groups exactly");
}

#[test]
fn bad_ratios_are_refused_naming_the_flag() {
    let mut o = TrainOptions::tiny(PathBuf::new());
    assert_eq!(ode_lr_ratio(&o).unwrap(), None);
    o.clex_lr = Some(3e-4);
    let r = ode_lr_ratio(&o).unwrap().unwrap();
    assert!((r - 0.1).abs() < 1e-12, "{r}");
    for bad in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        o.clex_lr = Some(bad);
        let e = ode_lr_ratio(&o).unwrap_err().to_string();
        assert!(e.contains("--clex-lr") && e.contains("> 0"), "{e}");
    }
    o.clex_lr = Some(1e-3);
    o.lr = 0.0;
    let e = ode_lr_ratio(&o).unwrap_err().to_string();
    assert!(e.contains("--clex-lr") && e.contains("--lr 0"), "{e}");
}

fn options(run: PathBuf, data: PathBuf, steps: usize) -> TrainOptions {
    let mut o = common::small_run_options(run, data, steps);
    o.checkpoint_every = steps;
    // The first step at the peak rate.
    o.warmup = 1;
    o
}

fn load(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let lm = clex_models::ModelSource::open(dir).and_then(|s| s.load::<Flex>(&Default::default(), DType::F32)).unwrap();
    weights(&lm)
}

#[test]
fn a_run_steps_the_ode_at_clex_lr() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    // A fresh CLEX layer has D = 0, which gives U no gradient: one step first makes D nonzero.
    let base = train(&options(dir.path().join("base"), data.clone(), 4)).unwrap();
    let first_step = |name: &str, clex_lr: Option<f64>| {
        let mut o = options(dir.path().join(name), data.clone(), 1);
        o.init_from = Some(base.model_dir.clone());
        o.tokenizer = Some(base.model_dir.join("tokenizer.json"));
        o.seed = 3;
        o.clex_lr = clex_lr;
        let report = train(&o).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join(name).join("metrics.csv")).unwrap();
        let t: usize = metrics.lines().nth(1).unwrap().split(',').nth(3).unwrap().parse().unwrap();
        assert!(t > 1, "seed {}: the step drew t = 1, which leaves the ODE out of the graph", o.seed);
        report.model_dir
    };
    let lr = TrainOptions::tiny(PathBuf::new()).lr;
    let one = first_step("one", None);
    let same = first_step("same", Some(lr));
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(read(&one) == read(&same), "--clex-lr equal to --lr trains bit for bit as without it");
    let tenth = first_step("tenth", Some(0.1 * lr));
    check_first_step("train(), clex_lr = lr/10", &load(&base.model_dir), &load(&one), &load(&tenth), lr, 0.1);
}

#[test]
fn clex_lr_without_a_clex_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let mut o = options(dir.path().join("rope"), data, 1);
    o.rope = RopeChoice::None;
    o.clex_lr = Some(1e-3);
    let e = train(&o).unwrap_err().to_string();
    assert!(e.contains("--clex-lr") && e.contains("no CLEX layer"), "{e}");
}
