//! Rotary application: rotate-half layout, partial rotary, fractional positions, and the
//! relative-position property q_m·k_n depending only on m − n.

mod common;

use burn::tensor::{Tensor, TensorData};
use clex_core::rope::{apply_rotary, apply_rotary_batched, apply_rotary_seq_major, base_inv_freq, cos_sin, cos_sin_host};
use common::*;

#[test]
fn apply_matches_the_rotate_half_formula_with_partial_rotary() {
    let device = Default::default();
    let (b, h, s, hd, rot) = (2usize, 3usize, 5usize, 12usize, 8usize);
    let x: Vec<f32> = (0..b * h * s * hd).map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0).collect();
    let positions = [0.0f32, 1.0, 2.5, 7.0, 100.25];
    let inv = base_inv_freq(10000.0, rot);
    let (cos_h, sin_h) = cos_sin_host(&positions, &inv, 1.0);
    let (cos, sin) = cos_sin::<B>(
        Tensor::from_data(TensorData::new(positions.to_vec(), [s]), &device),
        Tensor::from_data(TensorData::new(inv.clone(), [rot / 2]), &device),
        1.0,
    );
    assert_close_abs("cos table", &to_vec(cos.clone()), &cos_h, 1e-6);
    let y = to_vec(apply_rotary(Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [b, h, s, hd]), &device), cos, sin));
    let k = rot / 2;
    let mut want = x.clone();
    for bh in 0..b * h {
        for si in 0..s {
            let base = (bh * s + si) * hd;
            for i in 0..k {
                let (c, sn) = (cos_h[si * rot + i], sin_h[si * rot + i]);
                let (x1, x2) = (x[base + i], x[base + i + k]);
                want[base + i] = x1 * c - x2 * sn;
                want[base + i + k] = x2 * c + x1 * sn;
            }
        }
    }
    assert_close_abs("rotated", &y, &want, 1e-5);
    // Dims past `rot` pass through untouched.
    for bh in 0..b * h {
        for si in 0..s {
            let base = (bh * s + si) * hd;
            assert_eq!(&y[base + rot..base + hd], &x[base + rot..base + hd]);
        }
    }
}

#[test]
fn scores_depend_only_on_relative_position() {
    let device = Default::default();
    let hd = 16;
    let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.37).sin()).collect();
    let k: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.91).cos()).collect();
    let inv = base_inv_freq(10000.0, hd);
    let score = |m: f32, n: f32| -> f32 {
        let (c, s) = cos_sin::<B>(
            Tensor::from_data(TensorData::new(vec![m, n], [2]), &device),
            Tensor::from_data(TensorData::new(inv.clone(), [hd / 2]), &device),
            1.0,
        );
        let mut data = q.clone();
        data.extend(&k);
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [1, 1, 2, hd]), &device);
        let y = to_vec(apply_rotary(x, c, s));
        (0..hd).map(|i| y[i] * y[hd + i]).sum()
    };
    let a = score(10.0, 3.0);
    let b = score(107.0, 100.0);
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    assert!((score(10.0, 3.0) - score(10.0, 4.0)).abs() > 1e-3, "different offsets differ");
}

#[test]
fn sequence_major_and_per_row_tables_match_the_head_major_result() {
    let device = Default::default();
    let (b, h, s, hd, rot) = (2usize, 3usize, 4usize, 12usize, 8usize);
    let x: Vec<f32> = (0..b * h * s * hd).map(|i| ((i * 13 % 23) as f32 - 11.0) / 5.0).collect();
    let inv = Tensor::<B, 1>::from_data(TensorData::new(base_inv_freq(10000.0, rot), [rot / 2]), &device);
    // Row 0 at positions 0..s, row 1 at 3..3+s (a left-padded batch).
    let pos: Vec<f32> = (0..s).map(|m| m as f32).chain((0..s).map(|m| m as f32 + 3.0)).collect();
    let (cos, sin) = cos_sin::<B>(Tensor::from_data(TensorData::new(pos, [b * s]), &device), inv, 1.0);
    let (cos, sin) = (cos.reshape([b, s, rot]), sin.reshape([b, s, rot]));
    let head_major = Tensor::<B, 4>::from_data(TensorData::new(x, [b, h, s, hd]), &device);
    let want = apply_rotary_batched(head_major.clone(), cos.clone(), sin.clone());
    // Each row by itself with its own table.
    for row in 0..b {
        let one = apply_rotary_batched(head_major.clone().narrow(0, row, 1), cos.clone().narrow(0, row, 1), sin.clone().narrow(0, row, 1));
        assert_eq!(to_vec(one), to_vec(want.clone().narrow(0, row, 1)));
    }
    let seq_major = apply_rotary_seq_major(head_major.swap_dims(1, 2), cos, sin).swap_dims(1, 2);
    assert_eq!(to_vec(seq_major), to_vec(want));
}
