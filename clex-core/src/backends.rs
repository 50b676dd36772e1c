//! The backends [`crate::clex::ClexBackend`] is implemented for, with their capabilities
//! (the solve is the trait's default, the plain host one; `Autodiff<B>` over any of them gets
//! the differentiable version). This file only lists types: which backend a program runs on
//! is decided in one place, `clex-models`' `backend` module.

use crate::clex::ClexBackend;

impl ClexBackend for burn_flex::Flex {}

/// wgpu with burn's fusion layer; its matmuls are cubecl's.
#[cfg(feature = "wgpu")]
impl ClexBackend for burn_wgpu::Wgpu {
    const GEMV_ANY_LENGTH: bool = false;
}

/// wgpu without burn's fusion layer: what clex-train runs on (see its `backend` module).
#[cfg(feature = "wgpu")]
impl<F: burn_wgpu::FloatElement, I: burn_wgpu::IntElement, BT: burn_wgpu::BoolElement> ClexBackend
    for burn_wgpu::CubeBackend<burn_wgpu::WgpuRuntime, F, I, BT>
{
    const GEMV_ANY_LENGTH: bool = false;
}

#[cfg(feature = "tch")]
impl<E: burn_tch::TchElement> ClexBackend for burn_tch::LibTorch<E> {}
