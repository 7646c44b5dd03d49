//! The CUDA device: hand-written kernels (`cuda/*.cu`, compiled by build.rs into
//! one embedded fatbin) and cuBLASLt GEMMs, driven through cudarc with dynamic
//! loading, so a binary built here starts on machines without CUDA and finds the
//! driver at run time on a GPU machine.
//!
//! Layout, one Rust file per kernel family, mirroring `cuda/` and `src/cpu/`:
//! - [`device`]: context, stream, module, the stream-ordered caching allocator
//!   (a pool per handle) with its memory statistics, host/device copies, the
//!   accounting, errors that name the op; `isolated` handles for tests;
//! - [`gemm`]: cuBLASLt bf16 GEMMs (f32 accumulation, bias epilogue);
//! - [`attention`], [`lora`], [`small_ops`], [`optim`], [`loss`], [`sampling`]: launch wrappers whose
//!   arguments mirror the CPU twins';
//! - [`tensor`]: `Storage::Cuda` and the bridge from `Tensor` to kernel buffers
//!   (dtype policy, windows, casts, strided layout copies);
//! - [`bench`]: GPU benchmark workloads and baselines (criterion bench, GPU report);
//! - [`strided`]: index plans of the strided copy kernel (host functions, tested
//!   in every build);
//! - [`attention_plan`]: argument checks and tile tables of the attention
//!   launches (host functions, tested in every build);
//! - [`emulator`]: the attention kernels' CUDA sources compiled for the CPU
//!   (`cuda/emulator/`) and run through a warp emulator, so their index
//!   arithmetic is tested without a GPU (`cfg(actial_emulator)`: a C++20 compiler was found);
//! - [`emulated`]: `ACTIAL_EMULATED_DRIVER=1` loads an emulated libcuda and
//!   libcublasLt (`cuda/emulator/emulated_*.cpp`) in place of NVIDIA's, so this
//!   whole device layer runs on the CPU with the emulated kernels;
//! - [`nvtx`]: training phases: profiler ranges (no-ops unless the kernels
//!   were built) and the phase the accounting files work under;
//! - [`accounting`]: per-phase counts of copies, syncs, launches, GEMMs and
//!   allocations that `device` keeps, with the pool's high-water mark;
//! - [`build_info`]: what build.rs compiled (ptxas report), available in every build;
//! - [`gpus`]: datasheet figures (memory, bf16 peak, bandwidth) of the GPUs the plan and benches know.
//!
//! The device layer is compiled only when build.rs found nvcc (`cfg(actial_cuda)`);
//! without it [`available`] says what to install.

pub mod accounting;
pub mod attention_plan;
pub mod build_info;
#[cfg(actial_cuda)]
pub mod emulated;
#[cfg(actial_emulator)]
pub mod emulator;
pub mod gpus;
pub mod nvtx;
pub mod strided;

#[cfg(actial_cuda)]
pub mod attention;
#[cfg(actial_cuda)]
pub mod bench;
#[cfg(actial_cuda)]
pub mod device;
#[cfg(actial_cuda)]
pub mod gemm;
#[cfg(actial_cuda)]
pub mod lora;
#[cfg(actial_cuda)]
pub mod loss;
#[cfg(actial_cuda)]
pub mod optim;
#[cfg(actial_cuda)]
pub mod sampling;
#[cfg(actial_cuda)]
pub mod small_ops;
#[cfg(actial_cuda)]
pub mod tensor;

#[cfg(actial_cuda)]
pub use device::CudaDevice;

// Without the kernels: stand-ins for the device handle and device storage, so
// `Tensor` and the ops name CUDA storage in every build; nothing can create
// one (opening a device says the build lacks the kernels).
#[cfg(not(actial_cuda))]
mod standin;
#[cfg(not(actial_cuda))]
pub use standin::{device, tensor};

/// The shapes of one LoRA linear.
#[derive(Clone, Copy, Debug)]
pub struct LoraShape {
    pub rows: usize,
    pub din: usize,
    pub dout: usize,
    pub rank: usize,
    /// `alpha / r`.
    pub scale: f32,
}

/// What a run on `device` should say up front: nothing on the CPU; on CUDA,
/// on which GPU the path has been checked, and that it computes in bf16.
pub fn unverified_warning(device: crate::tensor::Device) -> Option<String> {
    match device {
        crate::tensor::Device::Cpu => None,
        #[cfg(actial_cuda)]
        d if emulated::requested() => Some(format!(
            "warning: running on {d} through the emulated CUDA driver ({} is set): the kernels run on the CPU, \
             slowly; this checks the CUDA code path, not a GPU",
            emulated::ENV
        )),
        d => Some(format!(
            "note: running on {d}: the CUDA path has been checked on one GPU model, an H200 (docs/GPU-RUNS.md; \
             tools/gpu-check.sh checks another); it computes in bf16 where the CPU computes in f32"
        )),
    }
}

/// `(free, total)` device memory of `device` as its driver reports it; `None`
/// on the CPU or when no device can be opened.
pub fn memory_info(device: crate::tensor::Device) -> Option<(u64, u64)> {
    match device {
        crate::tensor::Device::Cpu => None,
        #[cfg(actial_cuda)]
        crate::tensor::Device::Cuda(i) => {
            device::shared(i).ok()?.context().mem_get_info().ok().map(|(f, t)| (f as u64, t as u64))
        }
        #[cfg(not(actial_cuda))]
        crate::tensor::Device::Cuda(_) => None,
    }
}

/// What the handle behind `device` did since the last call (then its counters
/// and pool high-water mark restart); `None` on the CPU. On CUDA this is the
/// handle tensors created on this thread use (`device::shared`).
pub fn take_accounting(device: crate::tensor::Device) -> Option<accounting::Accounting> {
    match device {
        crate::tensor::Device::Cpu => None,
        #[cfg(actial_cuda)]
        crate::tensor::Device::Cuda(i) => device::shared(i).ok().map(|d| d.take_accounting()),
        #[cfg(not(actial_cuda))]
        crate::tensor::Device::Cuda(_) => None,
    }
}

/// Why CUDA cannot be used by this binary on this machine, or `Ok` with the
/// device count. Never panics: a missing driver is an answer, not a crash.
pub fn available() -> std::result::Result<usize, String> {
    #[cfg(actial_cuda)]
    {
        device::device_count()
    }
    #[cfg(not(actial_cuda))]
    {
        Err(build_info::NOT_BUILT.to_string())
    }
}
