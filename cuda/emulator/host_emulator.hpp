// A CPU stand-in for the CUDA execution model, precise enough to run this
// project's kernel sources unchanged: one fiber (a user-level context with its
// own stack) per CUDA thread, all fibers of a block on the launching OS thread,
// blocks one after another; `__shared__` arrays are function statics (shared by
// the block's threads; stale from the previous block, as on a GPU), and every
// warp-wide operation (shuffles, mma.m16n8k16, ldmatrix) is a rendezvous of the
// warp's 32 threads on a barrier. A thread that waits at a barrier yields to
// the next fiber, so a rendezvous costs context switches, not OS wakeups.
//
// What it checks: a kernel's index arithmetic, masks, fragment layouts and
// barriers, on machines without a GPU (tests/cuda_emulated.rs); races that
// depend on which thread or block runs first, under ACTIAL_EMULATOR_SCHEDULE's
// reverse and shuffled orders (host_emulator.cpp). What it cannot: timing,
// races only a weak memory model would expose (missing fences between
// blocks), or whether the hardware agrees with the fragment layouts below. Those are written from the PTX ISA
// ("Matrix Fragments for mma.m16n8k16", "ldmatrix"); the GPU parity tests
// (tests/cuda_parity.rs) remain the judge.
//
// Included by host_emulator.cpp before the kernel sources, with
// ACTIAL_HOST_EMULATION defined so common.cuh skips <cuda_bf16.h> and its
// inline-PTX helpers.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

// ---- language ------------------------------------------------------------------
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

using std::max;
using std::min;

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
// Set by the scheduler before it resumes a fiber (host_emulator.cpp), so plain
// globals: only one block of one launch runs at a time.
inline EmuDim3 threadIdx, blockIdx;
inline EmuDim3 blockDim, gridDim;  // fixed for one launch

struct alignas(16) uint4 {
  uint32_t x, y, z, w;
};
struct alignas(8) uint2 {
  uint32_t x, y;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
inline uint2 make_uint2(uint32_t x, uint32_t y) { return {x, y}; }

// The kernels are built with --use_fast_math: __expf is ex2.approx of a
// rounded x * log2(e), __logf is lg2.approx times ln 2, and every f32 operation
// flushes denormals to zero (the emulator sets the CPU's FTZ/DAZ bits for a
// launch, host_emulator.cpp). The two roundings are reproduced here; the
// approximations' last-bit error (about 2^-22) is not.
inline float __expf(float x) { return std::exp2(x * 1.4426950408889634f); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// Threads of one block run concurrently here, as on a GPU: atomics are real ones.
inline float atomicAdd(float *addr, float v) { return std::atomic_ref<float>(*addr).fetch_add(v); }
inline float __logf(float x) { return std::log2(x) * 0.6931471805599453f; }
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }

// ---- bf16 ----------------------------------------------------------------------
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.bits << 16); }
// Round to nearest even; NaN stays a (quiet) NaN.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {(uint16_t)(u >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}

// ---- threads, warps, barriers ----------------------------------------------------
// Hands the OS thread to the next fiber of the block (host_emulator.cpp).
void emu_yield();
// Barrier passes so far: the scheduler's evidence that a round made progress.
inline unsigned long emu_progress = 0;

// A barrier of `expected` fibers: the last to arrive releases the others,
// which notice the new generation when they are next resumed. The last one
// yields too, so who runs first past the barrier is the scheduler's choice
// (ACTIAL_EMULATOR_SCHEDULE), not always the last arrival.
struct EmuBarrier {
  int expected, arrived = 0;
  unsigned generation = 0;
  explicit EmuBarrier(int n) : expected(n) {}
  void arrive_and_wait() {
    const unsigned mine = generation;
    if (++arrived == expected) {
      arrived = 0;
      ++generation;
      ++emu_progress;
      emu_yield();
      return;
    }
    while (generation == mine) emu_yield();
  }
};

struct EmuWarp {
  EmuBarrier bar{32};
  float f[32];
  uint32_t u[32][6];
  const __nv_bfloat16 *row[32];
};

struct EmuBlock {
  EmuBarrier bar;
  std::unique_ptr<EmuWarp[]> warps;
  explicit EmuBlock(int threads) : bar(threads), warps(new EmuWarp[threads / 32]) {}
};
inline EmuBlock *emu_block = nullptr;

inline EmuWarp &emu_warp() { return emu_block->warps[threadIdx.x / 32]; }
inline int emu_lane() { return (int)(threadIdx.x % 32); }

inline void __syncthreads() { emu_block->bar.arrive_and_wait(); }

// Every lane publishes its value, then reads its source lane's.
inline float emu_shuffle(float v, int src) {
  EmuWarp &w = emu_warp();
  w.f[emu_lane()] = v;
  w.bar.arrive_and_wait();
  const float r = w.f[src & 31];
  w.bar.arrive_and_wait();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int mask) { return emu_shuffle(v, emu_lane() ^ mask); }
inline float __shfl_sync(unsigned, float v, int src) { return emu_shuffle(v, src); }

// common.cuh's warp_sum / warp_max in one rendezvous: every lane replays the
// butterfly (xor 16, 8, 4, 2, 1) on the published values, so the result and
// its rounding equal the shuffle version's.
template <class Op>
inline float emu_butterfly(float v, Op op) {
  EmuWarp &w = emu_warp();
  const int lane = emu_lane();
  w.f[lane] = v;
  w.bar.arrive_and_wait();
  float x[32];
  for (int l = 0; l < 32; ++l) x[l] = w.f[l];
  w.bar.arrive_and_wait();
  for (int o = 16; o > 0; o >>= 1) {
    float y[32];
    for (int l = 0; l < 32; ++l) y[l] = op(x[l], x[l ^ o]);
    std::memcpy(x, y, sizeof x);
  }
  return x[lane];
}
static inline float warp_sum(float v) {
  return emu_butterfly(v, [](float a, float b) { return a + b; });
}
static inline float warp_max(float v) {
  return emu_butterfly(v, [](float a, float b) { return fmaxf(a, b); });
}

// ---- tensor cores, lane by lane --------------------------------------------------
inline uint32_t emu_pack(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }
inline float emu_half(uint32_t r, int hi) {
  return __bfloat162float(__nv_bfloat16{(uint16_t)(hi ? r >> 16 : r & 0xffffu)});
}

inline uint32_t pack_bf16x2(float lo, float hi) {
  return emu_pack(__float2bfloat16_rn(lo).bits, __float2bfloat16_rn(hi).bits);
}

// d (16x8) += a (16x16) * b (16x8); with g = lane / 4, c = lane % 4:
//   a[0] = A[g][2c..2c+1]  a[1] = A[g+8][2c..]  a[2] = A[g][2c+8..]  a[3] = A[g+8][2c+8..]
//   b[0] = B[2c..2c+1][g]  b[1] = B[2c+8..2c+9][g]
//   d[0..1] = D[g][2c..2c+1]  d[2..3] = D[g+8][2c..2c+1]
inline void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  EmuWarp &w = emu_warp();
  const int lane = emu_lane();
  for (int i = 0; i < 4; ++i) w.u[lane][i] = a[i];
  w.u[lane][4] = b[0];
  w.u[lane][5] = b[1];
  w.bar.arrive_and_wait();
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, c = l % 4;
    for (int hi = 0; hi < 2; ++hi) {
      const int k = 2 * c + hi;
      A[g][k] = emu_half(w.u[l][0], hi);
      A[g + 8][k] = emu_half(w.u[l][1], hi);
      A[g][k + 8] = emu_half(w.u[l][2], hi);
      A[g + 8][k + 8] = emu_half(w.u[l][3], hi);
      B[k][g] = emu_half(w.u[l][4], hi);
      B[k + 8][g] = emu_half(w.u[l][5], hi);
    }
  }
  const int g = lane / 4, c = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i / 2) * 8, col = 2 * c + (i % 2);
    float acc = 0.0f;
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    d[i] += acc;
  }
  w.bar.arrive_and_wait();
}

// Lanes 8i..8i+7 give the rows of matrix i (16 aligned bytes each); lane gets
// (row g, cols 2c, 2c+1) of each matrix, or with trans (rows 2c, 2c+1, col g).
inline void emu_ldmatrix(uint32_t r[4], const __nv_bfloat16 *row, bool trans) {
  EmuWarp &w = emu_warp();
  const int lane = emu_lane();
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
    std::fprintf(stderr, "emulated ldmatrix: lane %d row address %p is not 16-byte aligned\n", lane, (void *)row);
    std::abort();
  }
  w.row[lane] = row;
  w.bar.arrive_and_wait();
  const int g = lane / 4, c = lane % 4;
  for (int i = 0; i < 4; ++i) {
    if (trans)
      r[i] = emu_pack(w.row[8 * i + 2 * c][g].bits, w.row[8 * i + 2 * c + 1][g].bits);
    else
      r[i] = emu_pack(w.row[8 * i + g][2 * c].bits, w.row[8 * i + g][2 * c + 1].bits);
  }
  w.bar.arrive_and_wait();
}
inline void ldmatrix_x4(uint32_t r[4], const __nv_bfloat16 *row) { emu_ldmatrix(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16 *row) { emu_ldmatrix(r, row, true); }
