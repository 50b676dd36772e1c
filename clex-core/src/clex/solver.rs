//! torchdiffeq-compatible fixed-grid RK4 ("3/8 rule", `method="rk4"`), docs/CLEX.md §4,
//! with exact reverse mode through the same steps.
//!
//! Grid: `n = ceil((τ_end − τ_0)/h + 1)` in f32, `grid[k] = k·h + τ_0` in f32 (not a running
//! sum), last point forced to τ_end. One step from (t0, y0), dt = t1 − t0:
//! ```text
//! k1 = F(t0, y0)
//! k2 = F(t0 + dt/3,  y0 + dt·k1/3)
//! k3 = F(t0 + 2dt/3, y0 + dt·(k2 − k1/3))
//! k4 = F(t1,         y0 + dt·(k1 − k2 + k3))
//! y1 = y0 + (k1 + 3(k2 + k3) + k4)·dt/8
//! ```
//! Requested times between grid points are linearly interpolated within the step.

use super::ode::{OdeFunction, Scratch, WeightGrads, record_len};

const ONE_THIRD: f32 = 1.0 / 3.0;
const TWO_THIRDS: f32 = 2.0 / 3.0;

/// The f32 time grid torchdiffeq builds for `step_size = h` from `start` to `end`.
pub fn time_grid(start: f32, end: f32, h: f32) -> Vec<f32> {
    let n = ((end - start) / h + 1.0).ceil() as usize;
    let n = n.max(2);
    let mut grid: Vec<f32> = (0..n).map(|k| k as f32 * h + start).collect();
    grid[n - 1] = end;
    grid
}

/// Called with (t, z_in, F(z_in, t)) for every evaluation, in call order.
pub type Trace<'a> = &'a mut dyn FnMut(f32, &[f32], &[f32]);

struct Stepper<'a> {
    f: &'a OdeFunction,
    scratch: Scratch,
    k1: Vec<f32>,
    k2: Vec<f32>,
    k3: Vec<f32>,
    k4: Vec<f32>,
    y: Vec<f32>,
}

impl<'a> Stepper<'a> {
    fn new(f: &'a OdeFunction) -> Self {
        let k = f.k();
        let v = || vec![0.0; k];
        Stepper { f, scratch: f.scratch(), k1: v(), k2: v(), k3: v(), k4: v(), y: v() }
    }

    /// One 3/8-rule step from `y0` into `y1`; `records` (4 × record_len) gets the four
    /// evaluations' records when taping.
    fn step(&mut self, t0: f32, t1: f32, y0: &[f32], y1: &mut [f32], records: Option<&mut [f32]>, trace: &mut Option<Trace<'_>>) {
        let dt = t1 - t0;
        let rl = record_len(self.f.k(), self.f.hidden());
        let [r0, r1, r2, r3] = match records {
            Some(r) => {
                let mut it = r.chunks_exact_mut(rl);
                [it.next(), it.next(), it.next(), it.next()]
            }
            None => [None, None, None, None],
        };
        let Stepper { f, scratch, k1, k2, k3, k4, y } = self;

        f.eval(t0, y0, k1, scratch, r0);
        if let Some(tr) = trace.as_mut() {
            tr(t0, y0, k1);
        }
        for i in 0..y.len() {
            y[i] = y0[i] + dt * k1[i] * ONE_THIRD;
        }
        let ta = t0 + dt * ONE_THIRD;
        f.eval(ta, y, k2, scratch, r1);
        if let Some(tr) = trace.as_mut() {
            tr(ta, y, k2);
        }
        for i in 0..y.len() {
            y[i] = y0[i] + dt * (k2[i] - k1[i] * ONE_THIRD);
        }
        let tb = t0 + dt * TWO_THIRDS;
        f.eval(tb, y, k3, scratch, r2);
        if let Some(tr) = trace.as_mut() {
            tr(tb, y, k3);
        }
        for i in 0..y.len() {
            y[i] = y0[i] + dt * (k1[i] - k2[i] + k3[i]);
        }
        f.eval(t1, y, k4, scratch, r3);
        if let Some(tr) = trace.as_mut() {
            tr(t1, y, k4);
        }
        for i in 0..y.len() {
            y1[i] = y0[i] + (k1[i] + 3.0 * (k2[i] + k3[i]) + k4[i]) * dt * 0.125;
        }
    }
}

/// Solves dz/dt = F from `z0` at `times[0]` and returns z at every requested time
/// (`times` ascending). `trace`, if given, sees every evaluation.
pub fn solve(f: &OdeFunction, z0: &[f32], times: &[f32], h: f32, mut trace: Option<Trace<'_>>) -> Vec<Vec<f32>> {
    assert!(!times.is_empty(), "solve needs at least one time");
    let mut out = vec![z0.to_vec()];
    if times.len() == 1 {
        return out;
    }
    let grid = time_grid(times[0], times[times.len() - 1], h);
    let mut stepper = Stepper::new(f);
    let mut y0 = z0.to_vec();
    let mut y1 = vec![0.0; z0.len()];
    let mut j = 1;
    for w in grid.windows(2) {
        let (t0, t1) = (w[0], w[1]);
        stepper.step(t0, t1, &y0, &mut y1, None, &mut trace);
        while j < times.len() && t1 >= times[j] {
            out.push(interpolate(t0, t1, &y0, &y1, times[j]));
            j += 1;
        }
        std::mem::swap(&mut y0, &mut y1);
    }
    out
}

fn interpolate(t0: f32, t1: f32, y0: &[f32], y1: &[f32], t: f32) -> Vec<f32> {
    if t == t0 {
        return y0.to_vec();
    }
    if t == t1 {
        return y1.to_vec();
    }
    let slope = (t - t0) / (t1 - t0);
    y0.iter().zip(y1).map(|(a, b)| a + slope * (b - a)).collect()
}

/// Everything the reverse pass needs from a forward solve over `[t_start, t_end]`.
#[derive(Debug, Clone)]
pub struct Tape {
    grid: Vec<f32>,
    /// Four evaluation records per step.
    records: Vec<f32>,
}

impl Tape {
    /// Number of RK4 steps taken.
    pub fn steps(&self) -> usize {
        self.grid.len() - 1
    }
}

/// Solves from `z0` at `t_start` to `t_end` and keeps the tape for [`backprop`].
pub fn solve_taped(f: &OdeFunction, z0: &[f32], t_start: f32, t_end: f32, h: f32) -> (Vec<f32>, Tape) {
    let k = f.k();
    let rl = record_len(k, f.hidden());
    let grid = time_grid(t_start, t_end, h);
    let steps = grid.len() - 1;
    let mut records = vec![0.0; steps * 4 * rl];
    let mut stepper = Stepper::new(f);
    let mut y0 = z0.to_vec();
    let mut y1 = vec![0.0; k];
    for s in 0..steps {
        let rec = &mut records[s * 4 * rl..(s + 1) * 4 * rl];
        stepper.step(grid[s], grid[s + 1], &y0, &mut y1, Some(rec), &mut None);
        std::mem::swap(&mut y0, &mut y1);
    }
    (y0, Tape { grid, records })
}

/// Gradients of a scalar loss w.r.t. the solve's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct SolveGrads {
    /// ∂L/∂z0.
    pub z0: Vec<f32>,
    /// ∂L/∂U and ∂L/∂D.
    pub weights: WeightGrads,
}

/// Exact reverse mode through the taped steps: given λ = ∂L/∂z(t_end), returns ∂L/∂z0,
/// ∂L/∂U and ∂L/∂D. The arithmetic is the transpose of [`Stepper::step`], stage by stage.
pub fn backprop(f: &OdeFunction, tape: &Tape, lam_end: &[f32]) -> SolveGrads {
    let (k, hd) = (f.k(), f.hidden());
    let rl = record_len(k, hd);
    let tr = f.transposed();
    let mut grads = WeightGrads { up: vec![0.0; k * hd], down: vec![0.0; hd * k] };
    let mut lam = lam_end.to_vec();
    let v = || vec![0.0f32; k];
    let (mut g1, mut g2, mut g3, mut g4, mut ls) = (v(), v(), v(), v(), v());
    let mut da = vec![0.0f32; hd];
    for s in (0..tape.steps()).rev() {
        let dt = tape.grid[s + 1] - tape.grid[s];
        let rec = &tape.records[s * 4 * rl..(s + 1) * 4 * rl];
        let c = dt * 0.125;
        for i in 0..k {
            g1[i] = lam[i] * c;
            g2[i] = lam[i] * 3.0 * c;
            g3[i] = g2[i];
            g4[i] = g1[i];
        }
        // k4 = F(t1, y0 + dt·(k1 − k2 + k3))
        f.vjp(&tr, &rec[3 * rl..4 * rl], &g4, &mut ls, &mut grads, &mut da);
        for i in 0..k {
            lam[i] += ls[i];
            g1[i] += dt * ls[i];
            g2[i] -= dt * ls[i];
            g3[i] += dt * ls[i];
        }
        // k3 = F(tb, y0 + dt·(k2 − k1/3))
        f.vjp(&tr, &rec[2 * rl..3 * rl], &g3, &mut ls, &mut grads, &mut da);
        for i in 0..k {
            lam[i] += ls[i];
            g2[i] += dt * ls[i];
            g1[i] -= dt * ONE_THIRD * ls[i];
        }
        // k2 = F(ta, y0 + dt·k1/3)
        f.vjp(&tr, &rec[rl..2 * rl], &g2, &mut ls, &mut grads, &mut da);
        for i in 0..k {
            lam[i] += ls[i];
            g1[i] += dt * ONE_THIRD * ls[i];
        }
        // k1 = F(t0, y0)
        f.vjp(&tr, &rec[..rl], &g1, &mut ls, &mut grads, &mut da);
        for i in 0..k {
            lam[i] += ls[i];
        }
    }
    SolveGrads { z0: lam, weights: grads }
}
