// Token sampling: temperature, top-k, top-p per logits row, `samples_per_row`
// draws sharing one row's distribution (the G samples of a GRPO group at their
// first token), Philox streams identical to src/cpu/sampling.rs, and the chosen
// token's log-probability under the full tempered softmax.
//
// Sorting-free: the top-k / top-p cut is a threshold on e = exp(x/T - max),
// found by bisection on the float's bit pattern (positive floats order like
// their bits): ~30 counting passes over a row that stays in L2, instead of a
// sort of the whole vocabulary. Draws walk the kept tokens in vocabulary order,
// as the CPU twin does. Ties at the top-k threshold keep every tied token (the
// CPU keeps the first k); with real-valued logits ties are rare.
#include "common.cuh"

// hot: sample_rows

#define SAMPLE_THREADS 1024

static __device__ __forceinline__ float tempered_e(const bf16 *row, int c, float inv_t, float m) {
  return __expf(bf(row[c]) * inv_t - m);
}

// Count (cut == false) or mass (cut == true) of the row's e >= t.
static __device__ float mass_at_least(const bf16 *row, int v, float inv_t, float m, float t, bool mass,
                                      float *scratch) {
  float acc = 0.0f;
  for (int c = threadIdx.x; c < v; c += blockDim.x) {
    const float e = tempered_e(row, c, inv_t, m);
    if (e >= t) acc += mass ? e : 1.0f;
  }
  return block_sum(acc, scratch);
}

// Largest threshold (as bits, in [lo, 1.0]) whose count or mass is still >= need.
static __device__ uint32_t bisect_threshold(const bf16 *row, int v, float inv_t, float m, uint32_t lo, float need,
                                            bool mass, float *scratch) {
  uint32_t hi = 0x3f800001u;  // just above 1.0: nothing passes
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (mass_at_least(row, v, inv_t, m, __uint_as_float(mid), mass, scratch) >= need)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// One block of SAMPLE_THREADS per row; tokens and logp are [rows * samples_per_row].
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows(const bf16 *logits, const uint64_t *streams, ActialSamplingParams p, uint32_t *tokens, float *logp) {
  __shared__ float scratch[32];
  __shared__ float scan[SAMPLE_THREADS];
  __shared__ int chosen;
  const int r = blockIdx.x;
  if (r >= p.rows) return;
  const int v = p.vocab, n = p.samples_per_row, tid = threadIdx.x;
  const bf16 *row = logits + (int64_t)r * v;
  const bool greedy = p.temperature <= 0.0f;
  const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;

  float m = -INFINITY;
  for (int c = tid; c < v; c += blockDim.x) m = fmaxf(m, bf(row[c]) * inv_t);
  m = block_max(m, scratch);
  float z = 0.0f;
  for (int c = tid; c < v; c += blockDim.x) z += tempered_e(row, c, inv_t, m);
  const float lse = m + __logf(block_sum(z, scratch));

  if (greedy) {
    // The first index holding the maximum, as torch.argmax.
    float first = (float)v;
    for (int c = tid; c < v; c += blockDim.x)
      if (bf(row[c]) == m) {
        first = (float)c;
        break;
      }
    const int best = (int)(-block_max(-first, scratch));
    if (tid == 0)
      for (int j = 0; j < n; ++j) {
        tokens[(int64_t)r * n + j] = (uint32_t)best;
        logp[(int64_t)r * n + j] = bf(row[best]) - lse;
      }
    return;
  }

  // Keep e >= tau; 0 keeps everything.
  uint32_t tau_bits = 0;
  if (p.top_k > 0 && p.top_k < v) tau_bits = bisect_threshold(row, v, inv_t, m, 0, (float)p.top_k, false, scratch);
  if (p.top_p < 1.0f) {
    const float kept = mass_at_least(row, v, inv_t, m, __uint_as_float(tau_bits), true, scratch);
    tau_bits = bisect_threshold(row, v, inv_t, m, tau_bits, p.top_p * kept, true, scratch);
  }
  const float tau = __uint_as_float(tau_bits);

  // Each thread owns a contiguous slice of the vocabulary; an inclusive scan of
  // the slices' masses partitions [0, total) exactly, so one thread owns each draw.
  const int chunk = (v + blockDim.x - 1) / blockDim.x;
  const int c0 = min(v, tid * chunk), c1 = min(v, c0 + chunk);
  float local = 0.0f;
  int last_kept = -1;
  for (int c = c0; c < c1; ++c) {
    const float e = tempered_e(row, c, inv_t, m);
    if (e >= tau) {
      local += e;
      last_kept = c;
    }
  }
  scan[tid] = local;
  __syncthreads();
  for (int off = 1; off < blockDim.x; off <<= 1) {
    const float add = tid >= off ? scan[tid - off] : 0.0f;
    __syncthreads();
    scan[tid] += add;
    __syncthreads();
  }
  const float total = scan[blockDim.x - 1];
  const float lo = tid == 0 ? 0.0f : scan[tid - 1], hi = scan[tid];
  const int last_overall = (int)block_max((float)last_kept, scratch);

  for (int j = 0; j < n; ++j) {
    const float u = philox_first_uniform(p.seed_lo, p.seed_hi, streams[r] + (uint64_t)j);
    const float target = u * total;
    if (tid == 0) chosen = -1;
    __syncthreads();
    if (target >= lo && target < hi) {
      // Walk the slice as the CPU walks the row; rounding can leave target a
      // hair above the running sum at the slice's end: take its last kept token.
      float cum = lo;
      int pick = last_kept;
      for (int c = c0; c < c1; ++c) {
        const float e = tempered_e(row, c, inv_t, m);
        if (e < tau) continue;
        cum += e;
        if (target < cum) {
          pick = c;
          break;
        }
      }
      chosen = pick;
    }
    __syncthreads();
    if (tid == 0) {
      const int t = chosen >= 0 ? chosen : last_overall;  // target rounded up to total
      tokens[(int64_t)r * n + j] = (uint32_t)t;
      logp[(int64_t)r * n + j] = bf(row[t]) * inv_t - lse;
    }
    __syncthreads();
  }
}
