//! The concrete backend, chosen by cargo feature. This is the only module in the workspace
//! that decides it: everything else is generic over the backend, and asks capabilities (the
//! constants below, and those of `clex_core::ClexBackend`) instead of matching its name.
//!
//! | feature | backend | device |
//! |---|---|---|
//! | `tch` | libtorch (`burn-tch`) | `cuda:N` when libtorch has CUDA, else CPU |
//! | `wgpu` | wgpu (`burn-wgpu`) | the default adapter, or `N` discrete GPU |
//! | `flex` (default) | pure-Rust CPU (`burn-flex`) | CPU |
//!
//! When several are enabled the first row wins, so `--features wgpu` works without
//! `--no-default-features`.

use burn::tensor::Device;

/// The inference backend.
#[cfg(feature = "tch")]
pub type Inference = burn_tch::LibTorch<f32>;
/// The inference backend. burn's fusion layer is left out: burn 0.21's fusion miscompiles the
/// GPT-NeoX decode step (wrong logits, max error ≈ 4 on the tiny golden model, while every
/// piece of it is right alone and the same graph without fusion matches the CPU to 4e-6;
/// `clex-parity/tests/wgpu.rs`, `fusion_miscompiles_gpt_neox_decode`).
#[cfg(all(feature = "wgpu", not(feature = "tch")))]
pub type Inference = burn_wgpu::CubeBackend<burn_wgpu::WgpuRuntime, f32, i32, u32>;
/// The inference backend.
#[cfg(not(any(feature = "tch", feature = "wgpu")))]
pub type Inference = burn_flex::Flex;

/// The training backend: [`Inference`] with autodiff.
pub type Training = burn::backend::Autodiff<Inference>;

/// The device for a user-facing index (`--device N`); CPU backends ignore it.
pub fn device(index: Option<usize>) -> Device<Inference> {
    #[cfg(feature = "tch")]
    {
        if tch::Cuda::is_available() {
            return burn_tch::LibTorchDevice::Cuda(index.unwrap_or(0));
        }
        let _ = index;
        burn_tch::LibTorchDevice::Cpu
    }
    #[cfg(all(feature = "wgpu", not(feature = "tch")))]
    {
        match index {
            Some(i) => burn_wgpu::WgpuDevice::DiscreteGpu(i),
            None => burn_wgpu::WgpuDevice::DefaultDevice,
        }
    }
    #[cfg(not(any(feature = "tch", feature = "wgpu")))]
    {
        let _ = index;
        Default::default()
    }
}

/// `n` devices for data-parallel training: GPUs 0..n, or on the CPU `n` handles of the one
/// CPU device (burn-train then runs `n` workers side by side, which is how multi-device
/// training is exercised on a machine without GPUs).
pub fn devices(n: usize) -> Result<Vec<Device<Inference>>, crate::ModelError> {
    if n <= 1 {
        return Ok(vec![device(None)]);
    }
    #[cfg(feature = "tch")]
    {
        let available = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        if available == 0 {
            // libtorch's CPU device is one device, like flex's.
            return Ok(vec![burn_tch::LibTorchDevice::Cpu; n]);
        }
        if n > available {
            return Err(crate::ModelError::Devices(format!("{n} requested, libtorch sees {available} CUDA devices")));
        }
        Ok((0..n).map(burn_tch::LibTorchDevice::Cuda).collect())
    }
    #[cfg(all(feature = "wgpu", not(feature = "tch")))]
    {
        Ok((0..n).map(burn_wgpu::WgpuDevice::DiscreteGpu).collect())
    }
    #[cfg(not(any(feature = "tch", feature = "wgpu")))]
    {
        Ok(vec![device(None); n])
    }
}

/// Whether the compiled-in backend keeps tensors in host memory, so that the memory the OS
/// reports as available bounds what a forward may allocate (GPU memory is the backend's
/// business).
pub const HOST_MEMORY: bool = !cfg!(any(feature = "tch", feature = "wgpu"));

/// Human-readable name of the compiled-in backend.
pub fn name() -> &'static str {
    if cfg!(feature = "tch") {
        "tch (libtorch)"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "flex (CPU)"
    }
}
