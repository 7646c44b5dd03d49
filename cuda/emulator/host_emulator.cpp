// The attention kernels of cuda/attention.cu, compiled for the CPU against
// host_emulator.hpp, behind C entry points for src/cuda/emulator.rs. Each entry
// takes the same tile tables and parameters the CUDA launch wrappers pass, so
// the host-side planning (src/cuda/attention_plan.rs) is shared too.
#define ACTIAL_HOST_EMULATION 1
#include "host_emulator.hpp"

#include <mutex>
#include <thread>
#include <vector>

#include "../attention.cu"

namespace {

// Kernel statics stand in for shared memory, so launches must not overlap
// (the Rust test harness runs tests on several threads).
std::mutex launch_mutex;

// Runs `kernel()` for every block of `grid` with `threads` threads per block.
template <class Kernel>
void emu_launch(EmuDim3 grid, int threads, Kernel kernel) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  gridDim = grid;
  blockDim = EmuDim3{(unsigned)threads, 1, 1};
  EmuBlock block(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = EmuDim3{(unsigned)t, 0, 0};
      emu_block = &block;
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = EmuDim3{x, y, 0};
          kernel();
          block.bar.arrive_and_wait();  // the block ends for all its threads
        }
    });
  for (auto &th : pool) th.join();
}

using ForwardFn = void (*)(const bf16 *, const bf16 *, const bf16 *, const int32_t *, const int32_t *,
                           const int32_t *, const int32_t *, ActialAttentionParams, bf16 *, float *);

ForwardFn forward_kernel(int tensor_cores, int head_dim) {
  switch (head_dim) {
    case 32: return tensor_cores ? attention_forward_mma_d32 : attention_forward_d32;
    case 64: return tensor_cores ? attention_forward_mma_d64 : attention_forward_d64;
    case 80: return tensor_cores ? attention_forward_mma_d80 : attention_forward_d80;
    case 128: return tensor_cores ? attention_forward_mma_d128 : attention_forward_d128;
    default: return nullptr;
  }
}

}  // namespace

// The forward of src/cuda/attention.rs on the CPU: `tiles` blocks along x (the
// tile tables), one per query head along y. Returns -1 for a head dim with no kernel.
extern "C" int actial_emu_attention_forward(int tensor_cores, int head_dim, const uint16_t *q, const uint16_t *k,
                                            const uint16_t *v, const int32_t *cu_q, const int32_t *cu_k,
                                            const int32_t *tile_seg, const int32_t *tile_row, int tiles,
                                            int threads, int q_heads, int kv_heads, int causal, float scale,
                                            uint16_t *out, float *lse) {
  const ForwardFn f = forward_kernel(tensor_cores, head_dim);
  if (f == nullptr) return -1;
  const ActialAttentionParams p{q_heads, kv_heads, causal, scale};
  const auto *bq = reinterpret_cast<const bf16 *>(q), *bk = reinterpret_cast<const bf16 *>(k),
             *bv = reinterpret_cast<const bf16 *>(v);
  auto *bo = reinterpret_cast<bf16 *>(out);
  emu_launch(EmuDim3{(unsigned)tiles, (unsigned)q_heads, 1}, threads,
             [&] { f(bq, bk, bv, cu_q, cu_k, tile_seg, tile_row, p, bo, lse); });
  return 0;
}

// attention_merge on the CPU, launched as src/cuda/attention.rs launches it.
extern "C" int actial_emu_attention_merge(const uint16_t *out_a, const float *lse_a, const uint16_t *out_b,
                                          const float *lse_b, uint16_t *out, float *lse, int rows, int head_dim,
                                          int blocks, int threads) {
  emu_launch(EmuDim3{(unsigned)blocks, 1, 1}, threads, [&] {
    attention_merge(reinterpret_cast<const bf16 *>(out_a), lse_a, reinterpret_cast<const bf16 *>(out_b), lse_b,
                    reinterpret_cast<bf16 *>(out), lse, rows, head_dim);
  });
  return 0;
}
