//! The backends [`crate::clex::ClexBackend`] is implemented for. The impls are empty (the
//! trait's default is the plain host solve); `Autodiff<B>` over any of them gets the
//! differentiable version. This file only lists types: which backend a program runs on is
//! decided in one place, `clex-train`'s `backend` module.

use crate::clex::ClexBackend;

impl ClexBackend for burn_flex::Flex {}

#[cfg(feature = "wgpu")]
impl ClexBackend for burn_wgpu::Wgpu {}

/// wgpu without burn's fusion layer: what clex-train runs on (see its `backend` module).
#[cfg(feature = "wgpu")]
impl<F: burn_wgpu::FloatElement, I: burn_wgpu::IntElement, BT: burn_wgpu::BoolElement> ClexBackend
    for burn_wgpu::CubeBackend<burn_wgpu::WgpuRuntime, F, I, BT>
{
}

#[cfg(feature = "tch")]
impl<E: burn_tch::TchElement> ClexBackend for burn_tch::LibTorch<E> {}
