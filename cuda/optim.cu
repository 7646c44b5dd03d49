// Optimizer: multi-tensor AdamW (f32 master weights and moments, optional bf16
// copy out) and the global gradient norm with torch's clip coefficient, all
// tensors of a model in one launch each. CPU twin: src/cpu/optim.rs.
#include "common.cuh"

// hot: adamw_multi_tensor sum_squares_multi

// The slot whose [first_block, next first_block) holds `block` (binary search
// over the prefix sums).
static __device__ __forceinline__ int find_slot(const ActialTensorSlot *slots, int n, int64_t block) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (slots[mid].first_block <= block)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// One block per CHUNK elements of one tensor. Decoupled decay, then the Adam
// update: p = p (1 - lr wd) - step_size m / (sqrt(v) / bc2_sqrt + eps). Flags a
// non-finite weight or moment in h.nonfinite (the trainer stops before saving).
extern "C" __global__ void __launch_bounds__(ACTIAL_MULTI_TENSOR_THREADS)
    adamw_multi_tensor(const ActialTensorSlot *slots, ActialAdamWParams h) {
  const ActialTensorSlot s = slots[find_slot(slots, h.num_tensors, blockIdx.x)];
  const int64_t start = ((int64_t)blockIdx.x - s.first_block) * ACTIAL_MULTI_TENSOR_CHUNK;
  const int64_t end = min(start + ACTIAL_MULTI_TENSOR_CHUNK, s.numel);
  const float gs = h.grad_scale ? *h.grad_scale : 1.0f;
  const float decay = 1.0f - h.lr * h.weight_decay;
  bf16 *copy = (bf16 *)s.param_bf16;
  bool finite = true;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = s.grad[i] * gs;
    const float m = h.beta1 * s.exp_avg[i] + (1.0f - h.beta1) * g;
    const float v = h.beta2 * s.exp_avg_sq[i] + (1.0f - h.beta2) * g * g;
    const float p = s.param[i] * decay - h.step_size * m / (sqrtf(v) / h.bc2_sqrt + h.eps);
    s.exp_avg[i] = m;
    s.exp_avg_sq[i] = v;
    s.param[i] = p;
    if (copy) copy[i] = to_bf16(p);
    // Exponent bits all ones: inf or NaN (a bit test, whatever fast-math assumes).
    finite &= (__float_as_uint(p) & 0x7f800000u) != 0x7f800000u && (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
  }
  // Every writer stores the same 1: no atomics needed.
  if (!finite && h.nonfinite) *h.nonfinite = 1;
}

// partials[b] = sum of grad^2 over block b's chunk (same block layout as AdamW).
extern "C" __global__ void __launch_bounds__(ACTIAL_MULTI_TENSOR_THREADS)
    sum_squares_multi(const ActialTensorSlot *slots, int num_tensors, float *partials) {
  __shared__ float scratch[32];
  const ActialTensorSlot s = slots[find_slot(slots, num_tensors, blockIdx.x)];
  const int64_t start = ((int64_t)blockIdx.x - s.first_block) * ACTIAL_MULTI_TENSOR_CHUNK;
  const int64_t end = min(start + ACTIAL_MULTI_TENSOR_CHUNK, s.numel);
  float acc = 0.0f;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) acc += s.grad[i] * s.grad[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block: out[0] = sqrt(sum partials) (summed in f64, in a fixed order),
// out[1] = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0.
extern "C" __global__ void clip_coefficient(const float *partials, int n, float max_norm, float *out) {
  const double sum = block_sum_f64_fixed(partials, n);
  if (threadIdx.x == 0) {
    const double norm = sqrt(sum);
    out[0] = (float)norm;
    out[1] = max_norm > 0.0f ? (float)fmin(1.0, (double)max_norm / (norm + 1e-6)) : 1.0f;
  }
}
