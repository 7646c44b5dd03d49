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

using DqFn = void (*)(const bf16 *, const bf16 *, const bf16 *, const bf16 *, const float *, const float *,
                     const int32_t *, const int32_t *, const int32_t *, ActialAttentionParams, bf16 *);
using DkvFn = void (*)(const bf16 *, const bf16 *, const bf16 *, const bf16 *, const float *, const float *,
                      const int32_t *, const int32_t *, const int32_t *, ActialAttentionParams, bf16 *, bf16 *);
using CascadeFn = void (*)(const bf16 *, const bf16 *, const bf16 *, const int32_t *, const bf16 *, const bf16 *,
                           const int32_t *, const int32_t *, ActialAttentionParams, bf16 *, float *);

struct BackwardFns {
  DqFn dq;
  DkvFn dkv;
};

bool backward_kernels(int tensor_cores, int head_dim, BackwardFns *f) {
  switch (head_dim) {
    case 32:
      *f = tensor_cores ? BackwardFns{attention_backward_dq_mma_d32, attention_backward_dkv_mma_d32}
                        : BackwardFns{attention_backward_dq_d32, attention_backward_dkv_d32};
      return true;
    case 64:
      *f = tensor_cores ? BackwardFns{attention_backward_dq_mma_d64, attention_backward_dkv_mma_d64}
                        : BackwardFns{attention_backward_dq_d64, attention_backward_dkv_d64};
      return true;
    case 80:
      *f = tensor_cores ? BackwardFns{attention_backward_dq_mma_d80, attention_backward_dkv_mma_d80}
                        : BackwardFns{attention_backward_dq_d80, attention_backward_dkv_d80};
      return true;
    case 128:
      *f = tensor_cores ? BackwardFns{attention_backward_dq_mma_d128, attention_backward_dkv_mma_d128}
                        : BackwardFns{attention_backward_dq_d128, attention_backward_dkv_d128};
      return true;
    default: return false;
  }
}

CascadeFn cascade_kernel(int head_dim) {
  switch (head_dim) {
    case 32: return attention_decode_cascade_d32;
    case 64: return attention_decode_cascade_d64;
    case 80: return attention_decode_cascade_d80;
    case 128: return attention_decode_cascade_d128;
    default: return nullptr;
  }
}

template <class T>
const bf16 *as_bf16(const T *p) {
  return reinterpret_cast<const bf16 *>(p);
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
  auto *bo = reinterpret_cast<bf16 *>(out);
  emu_launch(EmuDim3{(unsigned)tiles, (unsigned)q_heads, 1}, threads,
             [&] { f(as_bf16(q), as_bf16(k), as_bf16(v), cu_q, cu_k, tile_seg, tile_row, p, bo, lse); });
  return 0;
}

// attention_merge on the CPU, launched as src/cuda/attention.rs launches it.
extern "C" int actial_emu_attention_merge(const uint16_t *out_a, const float *lse_a, const uint16_t *out_b,
                                          const float *lse_b, uint16_t *out, float *lse, int rows, int head_dim,
                                          int blocks, int threads) {
  emu_launch(EmuDim3{(unsigned)blocks, 1, 1}, threads, [&] {
    attention_merge(as_bf16(out_a), lse_a, as_bf16(out_b), lse_b, reinterpret_cast<bf16 *>(out), lse, rows,
                    head_dim);
  });
  return 0;
}

// The backward of src/cuda/attention.rs on the CPU: delta, then dQ over query
// tiles (one block per tile and query head), then dK/dV over key tiles (one
// block per tile and kv head). Block sizes come from the caller (attention_plan).
extern "C" int actial_emu_attention_backward(int tensor_cores, int head_dim, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                             const uint16_t *out, const uint16_t *dout, const float *lse,
                                             const int32_t *cu, const int32_t *dq_seg, const int32_t *dq_row,
                                             int dq_tiles, const int32_t *dkv_seg, const int32_t *dkv_row,
                                             int dkv_tiles, int tokens, int q_heads, int kv_heads, int causal,
                                             float scale, int delta_rows_per_block, int delta_threads,
                                             int dq_threads, int dkv_threads, uint16_t *dq, uint16_t *dk,
                                             uint16_t *dv) {
  BackwardFns f;
  if (!backward_kernels(tensor_cores, head_dim, &f)) return -1;
  const ActialAttentionParams p{q_heads, kv_heads, causal, scale};
  const int rows = tokens * q_heads;
  std::vector<float> delta((size_t)rows);
  float *dp = delta.data();
  emu_launch(EmuDim3{(unsigned)((rows + delta_rows_per_block - 1) / delta_rows_per_block), 1, 1}, delta_threads,
             [&] { attention_backward_delta(as_bf16(out), as_bf16(dout), dp, rows, head_dim); });
  auto *bdq = reinterpret_cast<bf16 *>(dq), *bdk = reinterpret_cast<bf16 *>(dk), *bdv = reinterpret_cast<bf16 *>(dv);
  emu_launch(EmuDim3{(unsigned)dq_tiles, (unsigned)q_heads, 1}, dq_threads, [&] {
    f.dq(as_bf16(q), as_bf16(k), as_bf16(v), as_bf16(dout), lse, dp, cu, dq_seg, dq_row, p, bdq);
  });
  emu_launch(EmuDim3{(unsigned)dkv_tiles, (unsigned)kv_heads, 1}, dkv_threads, [&] {
    f.dkv(as_bf16(q), as_bf16(k), as_bf16(v), as_bf16(dout), lse, dp, cu, dkv_seg, dkv_row, p, bdk, bdv);
  });
  return 0;
}

// The cascade decode on the CPU: one block per (group, query head), `threads`
// threads (one warp per sample of the widest group).
extern "C" int actial_emu_attention_decode_cascade(int head_dim, const uint16_t *q, const uint16_t *prefix_k,
                                                   const uint16_t *prefix_v, const int32_t *cu_prefix,
                                                   const uint16_t *suffix_k, const uint16_t *suffix_v,
                                                   const int32_t *cu_suffix, const int32_t *cu_group, int groups,
                                                   int threads, int q_heads, int kv_heads, float scale,
                                                   uint16_t *out, float *lse) {
  const CascadeFn f = cascade_kernel(head_dim);
  if (f == nullptr) return -1;
  const ActialAttentionParams p{q_heads, kv_heads, 0, scale};
  auto *bo = reinterpret_cast<bf16 *>(out);
  emu_launch(EmuDim3{(unsigned)groups, (unsigned)q_heads, 1}, threads, [&] {
    f(as_bf16(q), as_bf16(prefix_k), as_bf16(prefix_v), cu_prefix, as_bf16(suffix_k), as_bf16(suffix_v), cu_suffix,
      cu_group, p, bo, lse);
  });
  return 0;
}
