//! CLEX: the continuous frequency trajectory θ(t) (docs/CLEX.md §3-§6).
//!
//! - [`ode`]: F(z, t), its time embedding and vector-Jacobian product (host, f32).
//! - [`solver`]: the torchdiffeq-compatible 3/8-rule RK4 grid and its exact reverse mode.
//! - [`theta`]: the training solve over [1, t] and the [1..T_max] table.
//! - [`table`]: where a layer keeps its table, and what drops it.
//! - [`schedule`]: t = ceil(N/P) clamped, log scaling, the training position sampler.
//! - [`naive`]: the same solve as plain burn ops (the autodiff baseline for tests and benches).
//! - [`ClexLayer`]: the burn module; [`ClexBackend`]: the solve as one autodiff node.

mod autodiff;
mod kernels;
mod layer;
pub mod naive;
pub mod ode;
pub mod schedule;
pub mod solver;
pub mod table;
pub mod theta;

pub use autodiff::ClexBackend;
pub use layer::{ClexLayer, ClexLayerConfig, OdeProjection};
pub use schedule::{PositionSampler, ScalingFactor, TrainDraw, log_scale, positions_from_subset, scaling_factor};
pub use table::ThetaSlot;
pub use theta::{OdeSpec, OdeWeights, ThetaGrads, ThetaTable, ThetaTape};
