// Helpers every kernel family includes: bf16 conversion, warp and block
// reductions, and the Philox4x32-10 generator (bit-identical to src/rng.rs).
#pragma once

// On the CPU (cuda/emulator/), host_emulator.hpp supplies bf16 and the
// built-ins before this file is read.
#ifndef ACTIAL_HOST_EMULATION
#include <cuda_bf16.h>
#endif
#include <stdint.h>

#include "params.h"

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float bf(bf16 x) { return __bfloat162float(x); }
static __device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// (The CPU emulator, which pays a 32-thread rendezvous per shuffle, supplies
// one-rendezvous versions with the same butterfly order.)
#ifndef ACTIAL_HOST_EMULATION
static __device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

static __device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
#endif

// Block-wide reductions; every thread gets the result. `scratch` holds 32 floats
// in shared memory; blockDim.x is a multiple of 32. The leading barrier makes
// back-to-back calls on the same scratch safe.
template <bool IS_MAX>
static __device__ float block_reduce(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = IS_MAX ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? scratch[lane] : (IS_MAX ? -INFINITY : 0.0f);
    w = IS_MAX ? warp_max(w) : warp_sum(w);
    if (lane == 0) scratch[0] = w;
  }
  __syncthreads();
  return scratch[0];
}

static __device__ __forceinline__ float block_sum(float v, float *scratch) { return block_reduce<false>(v, scratch); }
static __device__ __forceinline__ float block_max(float v, float *scratch) { return block_reduce<true>(v, scratch); }

// The sum of one f64 per thread of a block of at most 1024 threads, in a fixed
// order (a tree), returned to every thread. Scalars the host reads (a loss sum,
// a gradient norm) come out the same on every run. Safe to call several times
// in a row: the leading barrier keeps a call's writes from overtaking the
// previous call's reads.
static __device__ double block_reduce_f64_fixed(double s) {
  __shared__ double acc[1024];
  __syncthreads();
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  return acc[0];
}

// Sum of x[0..n) in f64 in a fixed order (per-thread strides, then the tree).
static __device__ double block_sum_f64_fixed(const float *x, int n) {
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
  return block_reduce_f64_fixed(s);
}

// Philox4x32-10 (Salmon et al., SC'11), the same constants and round structure
// as src/rng.rs, so a draw on the GPU equals the CPU draw for the same
// (key, counter).
static __device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k.x += W0;
      k.y += W1;
    }
    const uint32_t hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    const uint32_t hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

// The first uniform of Philox stream `stream` (counter index 0), as
// `Philox::new(seed, stream).uniform()` returns it: 24 bits in [0, 1).
static __device__ __forceinline__ float philox_first_uniform(uint32_t seed_lo, uint32_t seed_hi, uint64_t stream) {
  const uint4 c = make_uint4(0u, 0u, (uint32_t)stream, (uint32_t)(stream >> 32));
  const uint4 r = philox4x32_10(c, make_uint2(seed_lo, seed_hi));
  return (float)(r.x >> 8) * (1.0f / 16777216.0f);
}

// Grid-stride loop over `n` elements.
#define GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)(n); i += (int64_t)gridDim.x * blockDim.x)

// ---- tensor cores (sm_80+) -------------------------------------------------------
// (On the CPU, cuda/emulator/host_emulator.hpp defines these four from the same
// layout, lane by lane.)
#ifndef ACTIAL_HOST_EMULATION
//
// One warp-wide mma.m16n8k16 with bf16 inputs and f32 accumulators:
// d (16x8) += a (16x16, row-major) * b (16x8, "col": stored n-major). Fragment
// layout (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with g = lane / 4 and
// c = lane % 4, two bf16 per register, the smaller column (a) or row (b) index
// in the low 16 bits:
//   a[0] = A[g][2c..2c+1]   a[1] = A[g+8][2c..2c+1]   a[2] = A[g][2c+8..]   a[3] = A[g+8][2c+8..]
//   b[0] = B[2c..2c+1][g]   b[1] = B[2c+8..2c+9][g]
//   d[0..1] = D[g][2c..2c+1]   d[2..3] = D[g+8][2c..2c+1]
static __device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two floats as one bf16x2 register: `lo` in the low 16 bits.
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t *>(&v);
}

// ldmatrix: four 8x8 bf16 matrices from shared memory into fragments. Lanes
// 8i..8i+7 give the addresses of the 8 rows (16 contiguous, 16-byte aligned
// bytes each) of matrix i; r[i] receives matrix i as element (row g, cols 2c, 2c+1),
// or with .trans as (rows 2c, 2c+1, col g): a "b" fragment of a row-major [k][n] tile.
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16 *row) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16 *row) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
#endif  // ACTIAL_HOST_EMULATION
