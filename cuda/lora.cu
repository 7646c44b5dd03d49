// LoRA's rank-r projections: out[row, j] = sum_i x[row, i] * M(i, j) for a
// thin M with r <= 64 columns: A [r, n] read transposed (the forward's x A^T)
// or B [n, r] as stored (the backward's dy B). These
// are memory-bound (r is tiny), so one warp streams one row of x once and keeps
// all r partial sums in registers; the bf16 result feeds the cuBLASLt GEMMs that
// accumulate s * xa B^T into y (and the backward terms) in place, with beta = 1,
// so no [rows, out] temporary exists. CPU twin: src/cpu/lora.rs.
#include "common.cuh"

// hot: lora_project_r16 lora_project_r64

#define LORA_WARPS 8

// m_is_a: M(i, j) = m[j * n + i] (A, [r, n]); otherwise M(i, j) = m[i * r + j] (B, [n, r]).
template <int R_MAX>
static __device__ void lora_project_impl(const bf16 *x, const bf16 *m, bf16 *out, int rows, int n, int r,
                                         int m_is_a) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (int64_t)blockIdx.x * LORA_WARPS + threadIdx.x / 32;
  if (row >= rows) return;
  float acc[R_MAX] = {};
  const bf16 *xr = x + row * n;
  for (int i = lane; i < n; i += 32) {
    const float xv = bf(xr[i]);
#pragma unroll
    for (int j = 0; j < R_MAX; ++j)
      if (j < r) acc[j] += xv * bf(m_is_a ? m[(int64_t)j * n + i] : m[(int64_t)i * r + j]);
  }
#pragma unroll
  for (int j = 0; j < R_MAX; ++j) {
    if (j >= r) break;
    const float s = warp_sum(acc[j]);
    if (lane == 0) out[row * r + j] = to_bf16(s);
  }
}

#define LORA_ARGS const bf16 *x, const bf16 *m, bf16 *out, int rows, int n, int r, int m_is_a
#define LORA_PASS x, m, out, rows, n, r, m_is_a

extern "C" __global__ void __launch_bounds__(LORA_WARPS * 32) lora_project_r16(LORA_ARGS) {
  lora_project_impl<16>(LORA_PASS);
}
extern "C" __global__ void __launch_bounds__(LORA_WARPS * 32) lora_project_r64(LORA_ARGS) {
  lora_project_impl<64>(LORA_PASS);
}
