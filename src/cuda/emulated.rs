//! `ACTIAL_EMULATED_DRIVER=1`: run the CUDA device layer on the CPU.
//!
//! build.rs links `cuda/emulator/emulated_driver.cpp` (the driver API subset
//! cudarc and `src/cuda/` call, device memory as host memory, every kernel of
//! `cuda/*.cu` run by the warp emulator) and `emulated_cublaslt.cpp` (the
//! cuBLASLt calls of [`super::gemm`], computed with the documented
//! column-major semantics) into shared libraries with the sonames
//! `libcuda.so` and `libcublasLt.so`. Loading them by path before cudarc
//! looks for NVIDIA's makes the dynamic loader hand cudarc these instead (a
//! library already loaded under a soname satisfies later `dlopen`s of that
//! name), so the unchanged wrappers, allocator, tensor bridge and model run
//! end to end: `tests/cuda_model.rs` and `tests/cuda_parity.rs` pass through
//! the same code a GPU run takes.
//!
//! What this shows and what it cannot: launch arguments, buffer sizes and
//! layouts, copies, the GEMM translation and the kernels' arithmetic are real;
//! speed, asynchrony (every stream is synchronous here) and the hardware's
//! agreement with the emulated tensor-core fragments are not. The device
//! reports itself as "actial emulated device (CPU warp emulator, not a GPU)".

use std::sync::OnceLock;

/// The environment variable that switches the emulated driver on.
pub const ENV: &str = "ACTIAL_EMULATED_DRIVER";

/// Where build.rs put the two libraries, if it built them.
pub fn library_dir() -> Option<&'static str> {
    option_env!("ACTIAL_EMULATED_DRIVER_DIR")
}

/// Whether `ACTIAL_EMULATED_DRIVER` asks for the emulated driver (set, not "0").
pub fn requested() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v != "0" && !v.is_empty())
}

/// Loads the emulated libcuda and libcublasLt if [`requested`], once per
/// process; must run before cudarc first loads the driver (the device layer
/// calls it first thing). `Ok(false)`: not requested.
pub fn install_if_requested() -> Result<bool, String> {
    if !requested() {
        return Ok(false);
    }
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(install).clone().map(|()| true)
}

fn install() -> Result<(), String> {
    let dir = library_dir().ok_or_else(|| {
        format!(
            "{ENV} is set but this build has no emulated driver (build.rs needs nvcc's cuda.h and a C++20 compiler)"
        )
    })?;
    let mut held = Vec::new();
    for name in ["libcuda.so", "libcublasLt.so"] {
        let path = std::path::Path::new(dir).join(name);
        // SAFETY: our own libraries; their initialisers only set up statics.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("{ENV}: could not load {}: {e}", path.display()))?;
        held.push(lib);
    }
    // The name cudarc asks for must now resolve to the emulated driver; if a real
    // libcuda was loaded first, it would win, and this run would not be emulated.
    // SAFETY: loads by name what is already loaded; reads one symbol's address.
    let check = unsafe {
        libloading::Library::new("libcuda.so")
            .and_then(|l| l.get::<unsafe extern "C" fn(u64, usize) -> i32>(b"actial_emulated_driver_owns").map(|_| ()))
    };
    check.map_err(|e| {
        format!("{ENV}: libcuda.so does not resolve to the emulated driver ({e}); was a real driver loaded first?")
    })?;
    // The libraries stay loaded for the life of the process.
    held.into_iter().for_each(std::mem::forget);
    Ok(())
}
