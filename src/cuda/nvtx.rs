//! NVTX ranges around training phases (vision, LM, loss, backward, optimizer,
//! rollout prefill / decode), visible in Nsight Systems (docs/PROFILING.md). The
//! calls go to NVTX3's header-only implementation (`cuda/nvtx_shim.c`), which
//! does nothing unless a profiler injected itself; in a build without the CUDA
//! toolchain they compile to nothing.

/// An open range; it closes when dropped.
#[must_use = "the range closes when this guard drops"]
pub struct Range {
    _private: (),
}

#[cfg(actial_cuda)]
unsafe extern "C" {
    fn actial_nvtx_push(name: *const std::ffi::c_char);
    fn actial_nvtx_pop();
}

/// Opens a range named `name` (a C string literal, e.g. `c"lm_forward"`).
pub fn range(name: &'static std::ffi::CStr) -> Range {
    #[cfg(actial_cuda)]
    // SAFETY: `name` is a valid NUL-terminated static string.
    unsafe {
        actial_nvtx_push(name.as_ptr())
    };
    #[cfg(not(actial_cuda))]
    let _ = name;
    Range { _private: () }
}

impl Drop for Range {
    fn drop(&mut self) {
        #[cfg(actial_cuda)]
        // SAFETY: pops the range this guard pushed (ranges nest per thread).
        unsafe {
            actial_nvtx_pop()
        };
    }
}
