//! Every case of `fixtures/clex_layer.safetensors` (made with the official CLEX code,
//! torchdiffeq 0.2.3, f32): θ tables, inference cos/sin packs, gradients of Σ w·θ(t)
//! through the training solve, the recorded training forward (sampled t and positions, its
//! pack and gradients), and the trace of every ODE evaluation.
//!
//! Tolerances are the fixture manifest's suggestions (5x the worst float32 noise measured
//! between independent implementations): θ 2e-4 relative, packs 1e-3 absolute, gradients
//! 1e-3 of the largest |gradient|.

mod common;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use clex_core::clex::ode::OdeFunction;
use clex_core::clex::{positions_from_subset, solver};
use clex_core::rope::cos_sin;
use clex_core::{ClexAct, ClexLayer, ClexLayerConfig, ClexParams};
use common::*;

struct Case {
    name: String,
    cfg: ClexLayerConfig,
    tensors: Vec<String>,
    json: serde_json::Value,
}

fn cases() -> Vec<Case> {
    let m = read_json("clex_layer.json");
    let mut out = Vec::new();
    for (name, c) in m["cases"].as_object().unwrap() {
        let rs = &c["rope_scaling"];
        let act = match rs["act"].as_str().unwrap() {
            "tanh" => ClexAct::Tanh,
            _ => ClexAct::Silu,
        };
        let cfg = ClexLayerConfig::new(c["dim"].as_u64().unwrap() as usize, c["max_position_embeddings"].as_u64().unwrap() as usize)
            .with_rope_theta(c["base"].as_f64().unwrap())
            .with_params(ClexParams {
                max_factor: rs["max_factor"].as_u64().unwrap() as usize,
                param_factor: rs["param_factor"].as_u64().unwrap() as usize,
                act,
                time_dt: rs["time_dt"].as_f64().unwrap(),
            });
        let tensors = c["tensors"].as_object().unwrap().keys().cloned().collect();
        out.push(Case { name: name.clone(), cfg, tensors, json: c.clone() });
    }
    assert_eq!(out.len(), 8, "fixture should hold 8 cases");
    out
}

fn layer<Bk: Backend>(fx: &Fixture, case: &Case) -> ClexLayer<Bk> {
    let device = Default::default();
    let p = format!("layer/{}", case.name);
    let (inv, _) = fx.f32(&format!("{p}/inv_freq"));
    let (u, us) = fx.f32(&format!("{p}/U"));
    let (d, ds) = fx.f32(&format!("{p}/D"));
    let k = inv.len();
    case.cfg
        .init_with(
            Tensor::from_data(TensorData::new(inv, [k]), &device),
            Tensor::from_data(TensorData::new(u, [us[0], us[1]]), &device),
            Tensor::from_data(TensorData::new(d, [ds[0], ds[1]]), &device),
        )
        .unwrap()
}

fn vec_tensor<Bk: Backend>(v: Vec<f32>) -> Tensor<Bk, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), &Default::default())
}

/// Gradient check that also accepts an all-zero reference (the D = 0 case has dL/dU = 0).
fn check_grad(what: &str, got: &[f32], want: &[f32]) {
    if want.iter().all(|x| *x == 0.0) {
        assert_close_abs(what, got, want, 1e-7);
    } else {
        assert_close_rel_to_max(what, got, want, 1e-3);
    }
}

#[test]
fn theta_tables_match() {
    let fx = Fixture::open("clex_layer.safetensors");
    for case in cases() {
        let l = layer::<B>(&fx, &case);
        let table = l.theta_table();
        let (want, shape) = fx.f32(&format!("layer/{}/theta_table", case.name));
        let k = shape[1];
        assert_eq!(table.max_factor(), shape[0], "{}", case.name);
        // Row 0 of the reference is exp(log(inv_freq)), which t = 1 never uses; ours is
        // inv_freq itself. They agree to an ulp.
        assert_close_rel(&format!("{} row t=1", case.name), &table.as_slice()[..k], &want[..k], 1e-6);
        let r = assert_close_rel(&format!("{} rows t>=2", case.name), &table.as_slice()[k..], &want[k..], 2e-4);
        eprintln!("{}: theta table max rel diff {r:e}", case.name);
    }
}

#[test]
fn inference_packs_match() {
    let fx = Fixture::open("clex_layer.safetensors");
    let mut n_packs = 0;
    for case in cases() {
        let l = layer::<B>(&fx, &case);
        for (key, info) in case.json["packs"].as_object().unwrap() {
            let n: usize = key[1..].parse().unwrap();
            let sf = l.scaling_factor(n);
            assert_eq!(sf.t as u64, info["t"].as_u64().unwrap(), "{} {key}: t", case.name);
            let p = case.cfg.max_position_embeddings;
            let rows = n.min(p * sf.t);
            assert_eq!(rows as u64, info["rows"].as_u64().unwrap());
            let positions: Vec<f32> = (0..rows).map(|m| m as f32).collect();
            let (cos, sin) = cos_sin(vec_tensor::<B>(positions), l.theta(sf.t), 1.0);
            let (want, shape) = fx.f32(&format!("layer/{}/pack/{key}", case.name));
            let half = shape[1] * shape[2];
            assert_close_abs(&format!("{} {key} cos", case.name), &to_vec(cos), &want[..half], 1e-3);
            assert_close_abs(&format!("{} {key} sin", case.name), &to_vec(sin), &want[half..], 1e-3);
            n_packs += 1;
        }
    }
    assert!(n_packs >= 12, "only {n_packs} packs checked");
}

#[test]
fn training_solve_gradients_match() {
    let fx = Fixture::open("clex_layer.safetensors");
    let mut n = 0;
    for case in cases() {
        let grads_t: Vec<usize> = {
            let mut v: Vec<usize> = case
                .tensors
                .iter()
                .filter_map(|t| t.split("/grad/t").nth(1).map(|r| r.split('/').next().unwrap().parse().unwrap()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert!(!grads_t.is_empty(), "{} has no gradient records", case.name);
        for t in grads_t {
            let p = format!("layer/{}/grad/t{t}", case.name);
            let l = layer::<AD>(&fx, &case);
            let theta = l.theta_train(t);
            let (want_theta, _) = fx.f32(&format!("{p}/theta"));
            assert_close_rel(&format!("{p} theta"), &to_vec(theta.clone()), &want_theta, 2e-4);
            let (w, _) = fx.f32(&format!("{p}/w"));
            let loss = (theta * vec_tensor::<AD>(w)).sum();
            let (want_loss, _) = fx.f32(&format!("{p}/loss"));
            assert_close_rel(&format!("{p} loss"), &to_vec(loss.clone()), &want_loss, 2e-4);
            let grads = loss.backward();
            let gu = l.up().grad(&grads).expect("U has a gradient");
            let gd = l.down().grad(&grads).expect("D has a gradient");
            check_grad(&format!("{p} grad_U"), &to_vec(gu), &fx.f32(&format!("{p}/grad_U")).0);
            check_grad(&format!("{p} grad_D"), &to_vec(gd), &fx.f32(&format!("{p}/grad_D")).0);
            n += 1;
        }
    }
    assert!(n >= 12, "only {n} gradient records checked");
}

#[test]
fn recorded_training_forwards_match() {
    let fx = Fixture::open("clex_layer.safetensors");
    let mut n = 0;
    for case in cases() {
        for (key, info) in case.json["train"].as_object().unwrap() {
            let p = format!("layer/{}/train/{key}", case.name);
            let t = fx.i64(&format!("{p}/sampled_t"))[0] as usize;
            assert_eq!(t as u64, info["sampled_t"].as_u64().unwrap());
            let l_len = info["seq_len"].as_u64().unwrap() as usize;
            let s = info["scale_factor_s"].as_u64().unwrap() as usize;
            assert_eq!(s, (l_len / case.cfg.max_position_embeddings).max(1));
            let subset: Vec<usize> = fx.i64(&format!("{p}/randperm_sorted")).iter().map(|&r| r as usize).collect();
            let positions = positions_from_subset(l_len, t, s, &subset);
            let (want_pos, _) = fx.f32(&format!("{p}/positions"));
            assert_close_abs(&format!("{p} positions"), &positions, &want_pos, 0.0);

            let l = layer::<AD>(&fx, &case);
            let theta = l.theta_train(t);
            let (cos, sin) = cos_sin(vec_tensor::<AD>(positions), theta, 1.0);
            let (want_pack, shape) = fx.f32(&format!("{p}/pack"));
            let half = shape[1] * shape[2];
            assert_close_abs(&format!("{p} cos"), &to_vec(cos.clone()), &want_pack[..half], 1e-3);
            assert_close_abs(&format!("{p} sin"), &to_vec(sin.clone()), &want_pack[half..], 1e-3);
            if !info["ode_called"].as_bool().unwrap() {
                assert_eq!(t, 1);
                n += 1;
                continue;
            }
            let (wc, _) = fx.f32(&format!("{p}/Wc"));
            let (ws, _) = fx.f32(&format!("{p}/Ws"));
            let dev = Default::default();
            let wc = Tensor::<AD, 2>::from_data(TensorData::new(wc, [shape[1], shape[2]]), &dev);
            let ws = Tensor::<AD, 2>::from_data(TensorData::new(ws, [shape[1], shape[2]]), &dev);
            let loss = (cos * wc).sum() + (sin * ws).sum();
            let (want_loss, _) = fx.f32(&format!("{p}/loss"));
            assert_close_rel(&format!("{p} loss"), &to_vec(loss.clone()), &want_loss, 1e-4);
            let grads = loss.backward();
            let gu = to_vec(l.up().grad(&grads).unwrap());
            let gd = to_vec(l.down().grad(&grads).unwrap());
            check_grad(&format!("{p} grad_U"), &gu, &fx.f32(&format!("{p}/grad_U")).0);
            check_grad(&format!("{p} grad_D"), &gd, &fx.f32(&format!("{p}/grad_D")).0);
            n += 1;
        }
    }
    assert!(n >= 2, "only {n} training records checked");
}

/// Every F(z, t) call of the [1..T_max] solve, in call order: times, input states and
/// derivatives. z drifts by f32 noise along the solve (|z| <= ~25), hence 2e-4 absolute.
#[test]
fn ode_evaluation_trace_matches() {
    let fx = Fixture::open("clex_layer.safetensors");
    let mut traced = 0;
    for case in cases() {
        let p = format!("layer/{}/trace", case.name);
        if !fx.has(&format!("{p}/t")) {
            continue;
        }
        let w = layer::<B>(&fx, &case).weights();
        let f = OdeFunction::new(case.cfg.dim, case.cfg.params.act, w.up.clone(), w.down.clone());
        let z0: Vec<f32> = w.inv_freq.iter().map(|x| x.ln()).collect();
        let times: Vec<f32> = (1..=case.cfg.params.max_factor).map(|t| t as f32).collect();
        let (mut ts, mut zs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
        let mut record = |t: f32, z: &[f32], dz: &[f32]| {
            ts.push(t);
            zs.extend_from_slice(z);
            fs.extend_from_slice(dz);
        };
        solver::solve(&f, &z0, &times, case.cfg.params.time_dt as f32, Some(&mut record));
        let (want_t, _) = fx.f32(&format!("{p}/t"));
        assert_eq!(ts.len(), want_t.len(), "{p}: number of evaluations");
        assert_close_abs(&format!("{p}/t"), &ts, &want_t, 0.0);
        assert_close_abs(&format!("{p}/z_in"), &zs, &fx.f32(&format!("{p}/z_in")).0, 2e-4);
        assert_close_rel_to_max(&format!("{p}/dzdt"), &fs, &fx.f32(&format!("{p}/dzdt")).0, 1e-4);
        traced += 1;
    }
    assert!(traced >= 1, "no trace in the fixture");
}
