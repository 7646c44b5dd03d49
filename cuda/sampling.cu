// Token sampling: temperature, top-k, top-p per logits row, `samples_per_row`
// draws sharing one row's distribution (the G samples of a GRPO group at their
// first token), Philox streams identical to src/cpu/sampling.rs, and the chosen
// token's log-probability under the full tempered softmax. Banned ids (a
// rollout's vision placeholders) are left out of the draw, never out of the
// log-prob, so a rollout never copies logits to the host to mask them.
//
// Sorting-free: the top-k / top-p cut is a threshold on e = exp(x/T - max),
// found by bisection on the float's bit pattern (positive floats order like
// their bits): ~30 counting passes over a row that stays in L2, instead of a
// sort of the whole vocabulary. Draws walk the kept tokens in vocabulary order,
// as the CPU twin does. Ties at the cut (common: bf16 logits take few distinct
// values) are broken as the CPU's stable sort breaks them: the tokens above the
// threshold, then the first tied ones in vocabulary order, as many as top-k
// (or, for top-p, the mass still needed) asks for.
#include "common.cuh"

// hot: sample_rows

#define SAMPLE_THREADS 1024

// One row as the draw sees it: e = exp(x/T - m) of an allowed token, -1 for a
// banned one (below every threshold, never tied, never kept). `ban` is the
// block's shared copy of the banned ids.
struct SampleRow {
  const bf16 *row;
  int v;
  float inv_t, m;
  const int32_t *ban;
  int n_ban;
  __device__ bool banned(int c) const {
    for (int i = 0; i < n_ban; ++i)
      if (ban[i] == c) return true;
    return false;
  }
  __device__ float e(int c) const { return banned(c) ? -1.0f : __expf(bf(row[c]) * inv_t - m); }
};

// Count (mass == false) or mass (mass == true) of the row's e >= t.
static __device__ float mass_at_least(const SampleRow &s, float t, bool mass, float *scratch) {
  float acc = 0.0f;
  for (int c = threadIdx.x; c < s.v; c += blockDim.x) {
    const float e = s.e(c);
    if (e >= t) acc += mass ? e : 1.0f;
  }
  return block_sum(acc, scratch);
}

// Largest threshold (as bits, in [lo, 1.0]) whose count or mass is still >= need.
static __device__ uint32_t bisect_threshold(const SampleRow &s, uint32_t lo, float need, bool mass, float *scratch) {
  uint32_t hi = 0x3f800001u;  // just above 1.0: nothing passes
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (mass_at_least(s, __uint_as_float(mid), mass, scratch) >= need)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Inclusive prefix sum of one value per thread (Hillis-Steele over `scan`,
// blockDim.x entries); scan[blockDim.x - 1] holds the total afterwards.
static __device__ float block_inclusive_scan(float v, float *scan) {
  const int tid = threadIdx.x;
  __syncthreads();  // earlier readers of scan are done
  scan[tid] = v;
  __syncthreads();
  for (int off = 1; off < blockDim.x; off <<= 1) {
    const float add = tid >= off ? scan[tid - off] : 0.0f;
    __syncthreads();
    scan[tid] += add;
    __syncthreads();
  }
  return scan[tid];
}

// One block of SAMPLE_THREADS per row; tokens and logp are [rows * samples_per_row];
// `banned` holds p.n_banned ids.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows(const bf16 *logits, const uint64_t *streams, const int32_t *banned, ActialSamplingParams p,
                uint32_t *tokens, float *logp) {
  __shared__ float scratch[32];
  __shared__ float scan[SAMPLE_THREADS];
  __shared__ int chosen;
  __shared__ int32_t ban[ACTIAL_MAX_BANNED];
  const int r = blockIdx.x;
  if (r >= p.rows) return;
  const int v = p.vocab, n = p.samples_per_row, tid = threadIdx.x;
  const bf16 *row = logits + (int64_t)r * v;
  const bool greedy = p.temperature <= 0.0f;
  const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;
  const int n_ban = min(max(p.n_banned, 0), ACTIAL_MAX_BANNED);
  for (int i = tid; i < n_ban; i += blockDim.x) ban[i] = banned[i];
  __syncthreads();
  SampleRow s{row, v, inv_t, 0.0f, ban, n_ban};

  // The log-prob's normaliser is the full row's; the draw's maximum is over
  // the allowed tokens (the CPU twin's order of operations).
  float m_all = -INFINITY, m = -INFINITY;
  for (int c = tid; c < v; c += blockDim.x) {
    const float x = bf(row[c]) * inv_t;
    m_all = fmaxf(m_all, x);
    if (!s.banned(c)) m = fmaxf(m, x);
  }
  m_all = block_max(m_all, scratch);
  m = block_max(m, scratch);
  s.m = m;
  float z = 0.0f;
  for (int c = tid; c < v; c += blockDim.x) z += __expf(bf(row[c]) * inv_t - m_all);
  const float lse = m_all + __logf(block_sum(z, scratch));

  if (greedy) {
    // The first allowed index holding the maximum, as torch.argmax.
    float first = (float)v;
    for (int c = tid; c < v; c += blockDim.x)
      if (bf(row[c]) == m && !s.banned(c)) {
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

  // Keep e > tau, and the first `tied` tokens with e == tau; tau = 0 with no
  // limit on ties keeps everything.
  uint32_t tau_bits = 0;
  float tied = (float)v;
  if (p.top_k > 0 && p.top_k < v) {
    tau_bits = bisect_threshold(s, 0, (float)p.top_k, false, scratch);
    tied = (float)p.top_k - mass_at_least(s, __uint_as_float(tau_bits + 1), false, scratch);
  }
  if (p.top_p < 1.0f) {
    const float tau_k = __uint_as_float(tau_bits);
    const float above = tau_bits ? mass_at_least(s, __uint_as_float(tau_bits + 1), true, scratch) : 0.0f;
    const float kept = tau_bits ? above + tied * tau_k : mass_at_least(s, 0.0f, true, scratch);
    const float need = p.top_p * kept;
    // Thresholds above tau_k see no top-k ties; at tau_k itself the kept ties
    // alone may already be enough mass, checked below.
    const uint32_t top = bisect_threshold(s, tau_bits, need, true, scratch);
    const float t = __uint_as_float(top);
    const float above_t = mass_at_least(s, __uint_as_float(top + 1), true, scratch);
    // The CPU's prefix walk stops at the first tied token that reaches `need`.
    const float wanted = t > 0.0f ? fmaxf(1.0f, ceilf((need - above_t) / t)) : (float)v;
    tied = top == tau_bits ? fminf(tied, wanted) : wanted;
    tau_bits = top;
  }
  const float tau = __uint_as_float(tau_bits);

  // Each thread owns a contiguous slice of the vocabulary; inclusive scans of
  // the slices' tie counts and kept masses partition the ties and [0, total)
  // exactly, so one thread owns each draw.
  const int chunk = (v + blockDim.x - 1) / blockDim.x;
  const int c0 = min(v, tid * chunk), c1 = min(v, c0 + chunk);
  float ties_here = 0.0f;
  for (int c = c0; c < c1; ++c) ties_here += s.e(c) == tau ? 1.0f : 0.0f;
  block_inclusive_scan(ties_here, scan);
  const float ties_before = tid == 0 ? 0.0f : scan[tid - 1];
  // Whether token c (visited in order within the slice) is kept; `rank` counts
  // the ties seen so far.
  auto kept_token = [&](float e, float &rank) {
    if (e > tau) return true;
    if (e != tau) return false;
    return rank++ < tied;
  };
  float local = 0.0f, rank = ties_before;
  int last_kept = -1;
  for (int c = c0; c < c1; ++c) {
    const float e = s.e(c);
    if (kept_token(e, rank)) {
      local += e;
      last_kept = c;
    }
  }
  // lo is the previous thread's hi itself, so the slices tile [0, total) with
  // no gap or overlap from rounding.
  const float hi = block_inclusive_scan(local, scan), lo = tid == 0 ? 0.0f : scan[tid - 1];
  const float total = scan[blockDim.x - 1];
  const int last_overall = (int)block_max((float)last_kept, scratch);

  for (int j = 0; j < n; ++j) {
    const float u = philox_first_uniform(p.seed_lo, p.seed_hi, streams[r] + (uint64_t)j);
    const float target = u * total;
    if (tid == 0) chosen = -1;
    __syncthreads();
    if (target >= lo && target < hi) {
      // Walk the slice as the CPU walks the row; rounding can leave target a
      // hair above the running sum at the slice's end: take its last kept token.
      float cum = lo, rank_walk = ties_before;
      int pick = last_kept;
      for (int c = c0; c < c1; ++c) {
        const float e = s.e(c);
        if (!kept_token(e, rank_walk)) continue;
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

// The sort-based sampler the benches compare against (what a straightforward
// implementation does): sort the whole tempered row descending (a bitonic
// network over `padded` = next power of two >= vocab entries in global scratch,
// one block per row), cut top-k / top-p on the sorted prefix, draw by inverse
// CDF in sorted order. `scratch_val` / `scratch_idx` hold rows * padded entries.
// Not used by the engine; the draws follow a different order than sample_rows.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows_sorted_baseline(const bf16 *logits, const uint64_t *streams, ActialSamplingParams p,
                                float *scratch_val, int32_t *scratch_idx, int padded, uint32_t *tokens,
                                float *logp) {
  __shared__ float scratch[32];
  __shared__ float scan[SAMPLE_THREADS];
  __shared__ int cut;
  const int r = blockIdx.x;
  if (r >= p.rows) return;
  const int v = p.vocab, n = p.samples_per_row, tid = threadIdx.x;
  const bf16 *row = logits + (int64_t)r * v;
  float *val = scratch_val + (int64_t)r * padded;
  int32_t *idx = scratch_idx + (int64_t)r * padded;
  const float inv_t = p.temperature > 0.0f ? 1.0f / p.temperature : 1.0f;
  float m = -INFINITY;
  for (int c = tid; c < v; c += blockDim.x) m = fmaxf(m, bf(row[c]) * inv_t);
  m = block_max(m, scratch);
  const SampleRow s{row, v, inv_t, m, nullptr, 0};
  float z = 0.0f;
  for (int c = tid; c < padded; c += blockDim.x) {
    const float e = c < v ? s.e(c) : -1.0f;  // padding sorts last
    val[c] = e;
    idx[c] = c;
    if (c < v) z += e;
  }
  const float lse = m + __logf(block_sum(z, scratch));
  // Bitonic sort, descending.
  for (int size = 2; size <= padded; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = tid; i < padded; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool desc = (i & size) == 0;
          const float a = val[i], b = val[j];
          if (desc ? a < b : a > b) {
            val[i] = b;
            val[j] = a;
            const int t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
          }
        }
      }
    }
  __syncthreads();
  int keep = (p.top_k > 0 && p.top_k < v) ? p.top_k : v;
  // Prefix sums over the kept prefix in chunks, one per thread.
  const int chunk = (keep + blockDim.x - 1) / blockDim.x;
  const int c0 = min(keep, tid * chunk), c1 = min(keep, c0 + chunk);
  float local = 0.0f;
  for (int c = c0; c < c1; ++c) local += val[c];
  block_inclusive_scan(local, scan);
  float total = scan[blockDim.x - 1];
  if (p.top_p < 1.0f) {
    // The first sorted position where the running mass reaches top_p.
    if (tid == 0) cut = keep;
    __syncthreads();
    const float need = p.top_p * total;
    float cum = tid == 0 ? 0.0f : scan[tid - 1];
    if (cum < need && scan[tid] >= need)
      for (int c = c0; c < c1; ++c) {
        cum += val[c];
        if (cum >= need) {
          cut = c + 1;
          break;
        }
      }
    __syncthreads();
    keep = cut;
    total = 0.0f;
    for (int c = tid; c < keep; c += blockDim.x) total += val[c];
    total = block_sum(total, scratch);
  }
  if (tid == 0)
    for (int j = 0; j < n; ++j) {
      // Sequential walk on thread 0: the straightforward version.
      const float target = philox_first_uniform(p.seed_lo, p.seed_hi, streams[r] + (uint64_t)j) * total;
      float cum = 0.0f;
      int t = idx[keep - 1];
      for (int c = 0; c < keep; ++c) {
        cum += val[c];
        if (target < cum) {
          t = idx[c];
          break;
        }
      }
      tokens[(int64_t)r * n + j] = (uint32_t)t;
      logp[(int64_t)r * n + j] = bf(row[t]) * inv_t - lse;
    }
}
