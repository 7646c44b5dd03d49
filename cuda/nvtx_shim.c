/* NVTX ranges for the Rust side. NVTX3 is header-only: these calls cost a
 * branch unless a tool (nsys, ncu) injects itself through NVTX_INJECTION64_PATH,
 * so they stay in release builds. Compiled by build.rs (cc) when the CUDA
 * toolchain is present; src/cuda/nvtx.rs declares them. */
#include <nvtx3/nvToolsExt.h>

void actial_nvtx_push(const char *name) { nvtxRangePushA(name); }
void actial_nvtx_pop(void) { nvtxRangePop(); }
