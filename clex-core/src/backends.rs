//! The backends [`crate::clex::ClexBackend`] is implemented for, with their capabilities
//! (the solve is the trait's default, the plain host one; `Autodiff<B>` over any of them gets
//! the differentiable version). This file only lists types: which backend a program runs on
//! is decided in one place, `clex-models`' `backend` module.

use burn::tensor::ops::FloatTensor;

use crate::attention::{KeyMask, default_attention, default_kv_write, flex};
use crate::clex::ClexBackend;

/// burn-flex: our attention kernel and in-place cache writes (`crate::attention::flex`).
impl ClexBackend for burn_flex::Flex {
    const ATTENTION_SCORES: bool = false;

    fn grouped_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: &KeyMask) -> FloatTensor<Self> {
        match flex::attention(&q, &k, &v, mask) {
            Some(out) => out,
            None => default_attention::<Self>(q, k, v, mask),
        }
    }

    fn kv_write(cache: FloatTensor<Self>, new: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        flex::kv_write(cache, &new, at).unwrap_or_else(|cache| default_kv_write::<Self>(cache, new, at))
    }
}

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
