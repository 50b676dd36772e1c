//! The backends [`crate::clex::ClexBackend`] is implemented for. The impls are empty (the
//! trait's default is the plain host solve); `Autodiff<B>` over any of them gets the
//! differentiable version. This file only lists types: which backend a program runs on is
//! decided in one place, `clex-train`'s `backend` module.

use crate::clex::ClexBackend;

impl ClexBackend for burn_flex::Flex {}

#[cfg(feature = "wgpu")]
impl ClexBackend for burn_wgpu::Wgpu {}

#[cfg(feature = "tch")]
impl<E: burn_tch::TchElement> ClexBackend for burn_tch::LibTorch<E> {}
