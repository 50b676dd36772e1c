//! Shared by the gradient tests: the tiny CLEX-LLaMA fixture (P = 32, T_max = 8, byte
//! vocabulary), windows of bytes, and every parameter's gradient read out by name; and the
//! training half of the backend parity suite ([`parity`]).

#![allow(dead_code)] // each test binary uses its own part

pub mod parity;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};
use clex_models::CausalLm;
use clex_train::step::{ClexLm, StepSettings};

pub type Flex = burn::backend::Flex;
pub type AD = burn::backend::Autodiff<Flex>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures/clex").join(name)
}

/// The fixture model.
pub fn lm() -> CausalLm<AD> {
    clex_models::ModelSource::from_files(&fixture("llama_clex.json"), &[fixture("llama_clex.safetensors")])
        .and_then(|s| s.load::<AD>(&Default::default(), DType::F32))
        .unwrap()
}

/// The fixture model wrapped for training.
pub fn model(settings: StepSettings) -> ClexLm<AD> {
    ClexLm::new(lm(), settings)
}

/// `n` windows of `len + 1` byte tokens from the bundled corpus.
pub fn windows(n: usize, len: usize) -> Vec<Vec<u32>> {
    let docs = clex_eval::corpus::read_documents(&clex_eval::corpus::bundled_corpus_path()).unwrap();
    let bytes = docs[0].text.as_bytes();
    (0..n).map(|i| bytes[i * len..(i + 1) * len + 1].iter().map(|&b| b as u32).collect()).collect()
}

/// Every float parameter of a module in visiting order: its path and its gradient (empty
/// when it has none, like the frozen `inv_freq`).
pub type Grads = Vec<(String, Vec<f32>)>;

struct Reader<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: Grads,
}

impl ModuleVisitor<AD> for Reader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let g = self.grads.get::<Flex, D>(param.id).map(|g| g.into_data().convert::<f32>().to_vec::<f32>().unwrap()).unwrap_or_default();
        self.out.push((self.path.join("."), g));
    }
}

/// The gradients in `grads` of every parameter of `module`.
pub fn gradients_of<M: Module<AD>>(module: &M, grads: &GradientsParams) -> Grads {
    let mut r = Reader { grads, path: Vec::new(), out: Vec::new() };
    module.visit(&mut r);
    r.out
}

/// Worst relative error, max |got − want| / max |want| per tensor, over the CLEX ODE's
/// parameters (U, D: their gradients sum the θ gradient over every position and frequency
/// through the RK4 solve, where f32 rounding is largest) and over all other parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Worst {
    /// `ode_up_proj`, `ode_down_proj`.
    pub ode: f32,
    /// Everything else.
    pub rest: f32,
}

impl std::fmt::Display for Worst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ODE {:.2e}, other parameters {:.2e}", self.ode, self.rest)
    }
}

/// The largest value, or NaN when any value is NaN (unlike a fold over `f32::max`).
fn nan_max(values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(0.0f32, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.max(v) })
}

fn is_ode(name: &str) -> bool {
    name.contains("ode_up_proj") || name.contains("ode_down_proj")
}

/// Compares gradients parameter by parameter after checking that both have gradients for
/// exactly the same parameters and that U and D are among them with nonzero values.
/// `CLEX_GRAD_DETAIL=1` prints each parameter's error.
pub fn worst_relative(got: &Grads, want: &Grads) -> Worst {
    assert_eq!(got.len(), want.len(), "parameter count");
    let mut worst = Worst::default();
    for ((name, g), (wname, w)) in got.iter().zip(want) {
        assert_eq!(name, wname);
        assert_eq!(g.len(), w.len(), "{name}: gradient present in one and not the other");
        if w.is_empty() {
            continue;
        }
        // Every value finite, checked before any comparison: f32::max drops a NaN, so a
        // max-fold alone would not see one.
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
        assert!(w.iter().all(|v| v.is_finite()), "{name}: non-finite reference gradient");
        let scale = nan_max(w.iter().map(|v| v.abs()));
        assert!(scale > 0.0, "{name}: reference gradient {scale}");
        let err = nan_max(g.iter().zip(w).map(|(a, b)| (a - b).abs())) / scale;
        assert!(!err.is_nan(), "{name}: NaN gradient error");
        if std::env::var("CLEX_GRAD_DETAIL").is_ok() {
            eprintln!("  {name}: {err:.2e} of {scale:.2e}");
        }
        let slot = if is_ode(name) { &mut worst.ode } else { &mut worst.rest };
        *slot = slot.max(err);
    }
    for ode in ["ode_up_proj", "ode_down_proj"] {
        let nonzero = want.iter().any(|(n, w)| n.contains(ode) && w.iter().any(|v| *v != 0.0));
        assert!(nonzero, "{ode} must get a nonzero gradient (t > 1 runs the ODE)");
    }
    worst
}

/// Options of a small CLEX run on [`small_corpus`]: vocabulary 320, 2 × 64 tokens, `steps`
/// micro-batches with a checkpoint every 2 and 2 warmup steps.
pub fn small_run_options(run: PathBuf, data: PathBuf, steps: usize) -> clex_train::trainer::TrainOptions {
    let mut o = clex_train::trainer::TrainOptions::tiny(run);
    o.data = data;
    o.vocab_size = 320;
    o.seq_len = 64;
    o.batch_size = 2;
    o.steps = steps;
    o.checkpoint_every = 2;
    o.warmup = 2;
    o.valid_windows = 2;
    o.rope = clex_train::preset::RopeChoice::Clex { max_factor: 4 };
    o
}

/// A few KB of the bundled corpus as documents whose ids put some in validation.
pub fn small_corpus(dir: &Path) -> PathBuf {
    let docs = clex_eval::corpus::read_documents(&clex_eval::corpus::bundled_corpus_path()).unwrap();
    let text = &docs[0].text[..60_000];
    let mut lines = String::new();
    // "kjv/ruth" hashes to validation, the others to train.
    for (i, id) in ["kjv/genesis", "kjv/exodus", "kjv/ruth", "kjv/numbers", "kjv/leviticus"].iter().enumerate() {
        let part = &text[i * 12_000..(i + 1) * 12_000];
        lines.push_str(&serde_json::json!({"id": id, "text": part}).to_string());
        lines.push('\n');
    }
    let p = dir.join("small.jsonl");
    std::fs::write(&p, lines).unwrap();
    p
}
