//! The CLEX layer as a burn module, named like the HF checkpoints:
//! `clex_layer.inv_freq`, `clex_layer.proj_func.ode_up_proj`, `clex_layer.proj_func.ode_down_proj`.

use std::sync::Arc;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

use super::autodiff::{ClexBackend, host};
use super::schedule::{ScalingFactor, scaling_factor};
use super::table::ThetaSlot;
use super::theta::{OdeSpec, OdeWeights, ThetaTable};
use crate::config::{ClexParams, RopeConfig, RopeScaling};
use crate::error::ClexError;
use crate::rope::base_inv_freq;

/// What fixes a [`ClexLayer`]: the CLEX settings as `config.json` gives them, plus the
/// three numbers of the model's rotary geometry the layer needs.
#[derive(Config, Debug, PartialEq)]
pub struct ClexLayerConfig {
    /// Rotary dims d (head_dim, or the rotated part of it for partial rotary).
    pub dim: usize,
    /// P: the base model's `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// B: base of the initial frequencies θ(1).
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// The CLEX settings (T_max, p, activation, h); `with_params` sets them.
    #[config(default = "ClexParams::fresh(16)")]
    pub params: ClexParams,
}

impl ClexLayerConfig {
    /// The CLEX settings of a parsed HF config, or `None` if it is not a CLEX model.
    pub fn from_rope(rope: &RopeConfig) -> Option<Self> {
        match &rope.scaling {
            RopeScaling::Clex(params) => Some(ClexLayerConfig {
                dim: rope.rotary_dim,
                max_position_embeddings: rope.max_position_embeddings,
                rope_theta: rope.theta,
                params: *params,
            }),
            _ => None,
        }
    }

    /// K = d/2 frequencies.
    pub fn num_frequencies(&self) -> usize {
        self.dim / 2
    }

    /// H = p·d: the ODE network's hidden width.
    pub fn hidden(&self) -> usize {
        self.params.param_factor * self.dim
    }

    /// What fixes an ODE solve besides the weights.
    pub fn spec(&self) -> OdeSpec {
        OdeSpec { dim: self.dim, act: self.params.act, time_dt: self.params.time_dt as f32 }
    }

    /// t for a forward over `n` tokens in total (cache + new).
    pub fn scaling_factor(&self, n: usize) -> ScalingFactor {
        scaling_factor(n, self.max_position_embeddings, self.params.max_factor)
    }

    /// A fresh layer: inv_freq = 1/B^(2i/d), U ~ U(±1/sqrt(H)) (torch's kaiming-uniform with
    /// a = sqrt(5) on a [K, H] tensor), D = 0, so the initial trajectory is exactly NTK
    /// scaling with α = 2t − 1 (docs/CLEX.md §3.4).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClexLayer<B> {
        self.init_sampled(device, |shape, bound| Tensor::random(shape, Distribution::Uniform(-bound, bound), device))
    }

    /// [`ClexLayerConfig::init`] with U drawn by `uniform(shape, bound)` from U(±bound), for
    /// callers that seed their own draws (random model init).
    pub fn init_sampled<B: Backend>(&self, device: &B::Device, uniform: impl FnOnce([usize; 2], f64) -> Tensor<B, 2>) -> ClexLayer<B> {
        let (k, h) = (self.num_frequencies(), self.hidden());
        let bound = 1.0 / (h as f64).sqrt();
        let inv = base_inv_freq(self.rope_theta, self.dim);
        let up = uniform([k, h], bound);
        self.init_with(Tensor::from_data(TensorData::new(inv, [k]), device), up, Tensor::zeros([h, k], device))
            .expect("the shapes follow the config")
    }

    /// A layer holding given weights (e.g. from a checkpoint). Shapes are checked and
    /// reported with the HF tensor names. `inv_freq` is used as given (docs/CLEX.md §3.5).
    ///
    /// # Shapes
    /// - `inv_freq`: `[K]`, `up`: `[K, H]`, `down`: `[H, K]` with K = d/2, H = p·d
    pub fn init_with<B: Backend>(&self, inv_freq: Tensor<B, 1>, up: Tensor<B, 2>, down: Tensor<B, 2>) -> Result<ClexLayer<B>, ClexError> {
        let (k, h) = (self.num_frequencies(), self.hidden());
        let check = |name: &str, found: Vec<usize>, expected: Vec<usize>| {
            if found == expected { Ok(()) } else { Err(ClexError::Shape { name: name.into(), found, expected }) }
        };
        check("clex_layer.inv_freq", inv_freq.dims().to_vec(), vec![k])?;
        check("clex_layer.proj_func.ode_up_proj", up.dims().to_vec(), vec![k, h])?;
        check("clex_layer.proj_func.ode_down_proj", down.dims().to_vec(), vec![h, k])?;
        Ok(ClexLayer {
            inv_freq: Param::from_tensor(inv_freq).set_require_grad(false),
            proj_func: OdeProjection { ode_up_proj: Param::from_tensor(up), ode_down_proj: Param::from_tensor(down) },
            settings: self.clone(),
            table: ThetaSlot::default(),
        })
    }
}

/// The ODE network's two matrices (HF: `proj_func`).
#[derive(Module, Debug)]
pub struct OdeProjection<B: Backend> {
    /// U [K, H], used as u·U.
    pub ode_up_proj: Param<Tensor<B, 2>>,
    /// D [H, K], used as s·D.
    pub ode_down_proj: Param<Tensor<B, 2>>,
}

/// One CLEX layer per model: the learned frequency trajectory θ(t).
///
/// The parameters are private so that they change only through burn's module operations,
/// which also drop the cached inference table (see [`super::table`]).
#[derive(Module, Debug)]
pub struct ClexLayer<B: Backend> {
    /// θ(1), a frozen but saved buffer; the ODE starts at ln of it. Loaded as stored
    /// (it may be bf16-rounded in released checkpoints, docs/CLEX.md §3.5).
    inv_freq: Param<Tensor<B, 1>>,
    /// The ODE network.
    proj_func: OdeProjection<B>,
    #[module(skip)]
    settings: ClexLayerConfig,
    /// The inference θ table, solved on first use.
    table: ThetaSlot<B>,
}

impl<B: Backend> ClexLayer<B> {
    /// The layer's settings.
    pub fn config(&self) -> &ClexLayerConfig {
        &self.settings
    }

    /// K = d/2.
    pub fn num_frequencies(&self) -> usize {
        self.settings.num_frequencies()
    }

    /// θ(1) (`clex_layer.inv_freq`).
    pub fn inv_freq(&self) -> &Param<Tensor<B, 1>> {
        &self.inv_freq
    }

    /// U (`clex_layer.proj_func.ode_up_proj`), `[K, H]`.
    pub fn up(&self) -> &Param<Tensor<B, 2>> {
        &self.proj_func.ode_up_proj
    }

    /// D (`clex_layer.proj_func.ode_down_proj`), `[H, K]`.
    pub fn down(&self) -> &Param<Tensor<B, 2>> {
        &self.proj_func.ode_down_proj
    }

    /// Host copies of inv_freq, U and D (a device read: for saving and for solving the table).
    pub fn weights(&self) -> OdeWeights {
        OdeWeights {
            inv_freq: host::<B, 1>(self.inv_freq.val().into_primitive().tensor()).0,
            up: host::<B, 2>(self.proj_func.ode_up_proj.val().into_primitive().tensor()).0,
            down: host::<B, 2>(self.proj_func.ode_down_proj.val().into_primitive().tensor()).0,
        }
    }

    /// t for a forward over `n` tokens in total (cache + new).
    pub fn scaling_factor(&self, n: usize) -> ScalingFactor {
        self.settings.scaling_factor(n)
    }

    /// θ(1..=T_max) from one solve on first use, then reused until the weights change.
    pub fn theta_table(&self) -> Arc<ThetaTable> {
        self.table.get_or_solve(|| ThetaTable::solve(&self.weights(), &self.settings.spec(), self.settings.params.max_factor))
    }

    /// θ(t) for inference (no gradient): inv_freq itself at t = 1, else the table row.
    ///
    /// # Shapes
    /// - returns `[K]`
    pub fn theta(&self, t: usize) -> Tensor<B, 1> {
        let inv = self.inv_freq.val();
        if t <= 1 {
            return inv.cast(burn::tensor::FloatDType::F32);
        }
        let table = self.theta_table();
        let t = t.min(table.max_factor());
        let k = self.num_frequencies();
        Tensor::from_data(TensorData::new(table.row(t).to_vec(), [k]), (&inv.device(), burn::tensor::DType::F32))
    }

    /// The layer with D replaced (tests and tools that edit a layer by hand); the θ table
    /// is dropped with the old weights.
    ///
    /// # Shapes
    /// - `down`: `[H, K]`
    pub fn with_down(self, down: Tensor<B, 2>) -> Self {
        let ode_down_proj = self.proj_func.ode_down_proj.map(|_| down);
        let proj_func = OdeProjection { ode_up_proj: self.proj_func.ode_up_proj, ode_down_proj };
        ClexLayer { inv_freq: self.inv_freq, proj_func, settings: self.settings, table: ThetaSlot::default() }
    }
}

impl<B: ClexBackend> ClexLayer<B> {
    /// θ(t) for training: one solve over [1, t] that gradients flow through into U and D
    /// (and inv_freq, if it is made trainable). t = 1 returns inv_freq (no ODE).
    ///
    /// # Shapes
    /// - returns `[K]`
    pub fn theta_train(&self, t: usize) -> Tensor<B, 1> {
        if t <= 1 {
            return self.inv_freq.val();
        }
        let out = B::clex_theta(
            self.inv_freq.val().into_primitive().tensor(),
            self.proj_func.ode_up_proj.val().into_primitive().tensor(),
            self.proj_func.ode_down_proj.val().into_primitive().tensor(),
            self.settings.spec(),
            t,
        );
        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(out))
    }
}
