// Variable-length attention over packed segments (cu_seqlens), flash-style: the
// [queries, keys] score matrix never exists in memory; each block streams key
// tiles through shared memory and keeps an online softmax (running max m, sum l,
// rescaled output) per query row. CPU twin: src/cpu/attention.rs.
//
// Layout: q [Tq, Hq, D], k and v [Tk, Hkv, D] (GQA: query head h reads kv head
// h / (Hq / Hkv)), out [Tq, Hq, D], lse [Tq, Hq] (natural log, of the scaled
// scores). Segment s has queries cu_q[s]..cu_q[s+1] and keys cu_k[s]..cu_k[s+1];
// queries are the last positions of the key sequence, so a causal mask aligns
// bottom-right (decoding against a cache), as in FlashAttention.
//
// This is the correct-first SIMT version: f32 FMAs on bf16 loads, one key per
// lane for scores, lanes split the head dim for outputs. A tensor-core (mma)
// version is the next step once a GPU can measure it; the interface stays.
//
// Work split: blocks own a tile of one segment's queries (forward, dQ) or keys
// (dK/dV) for one head; the host builds the tile tables (tile -> segment, first
// row), so ragged segments need no padding.
#include "common.cuh"

// hot: attention_forward_d32 attention_forward_d64 attention_forward_d80 attention_forward_d128
// hot: attention_decode_cascade_d64 attention_decode_cascade_d128
// hot: attention_backward_dq_d80 attention_backward_dq_d128 attention_backward_dkv_d80 attention_backward_dkv_d128

#define ATT_BK 32                          // keys per shared-memory tile (one per lane)
#define FWD_WARPS 4
#define FWD_ROWS 4                         // query rows per warp
#define FWD_BQ (FWD_WARPS * FWD_ROWS)      // query rows per block
#define DQ_WARPS 4
#define DQ_ROWS 2
#define DQ_BQ (DQ_WARPS * DQ_ROWS)
#define DKV_WARPS 8
#define DKV_KEYS 4                         // keys per warp
#define DKV_BK (DKV_WARPS * DKV_KEYS)      // keys per block
#define DKV_BQ 32                          // query rows per shared-memory tile

static __device__ __forceinline__ int64_t head_off(int t, int heads, int h, int d) {
  return ((int64_t)t * heads + h) * d;
}

// Fills a [ATT_BK][STRIDE] f32 tile with rows kt.. of one head of a [T, H, D]
// bf16 tensor; rows at or past `stop` are zero.
template <int D, int STRIDE>
static __device__ void load_tile(float (*dst)[STRIDE], const bf16 *src, int kt, int stop, int heads, int h) {
  for (int e = threadIdx.x; e < ATT_BK * D; e += blockDim.x) {
    const int j = e / D, d = e % D, key = kt + j;
    dst[j][d] = key < stop ? bf(src[head_off(key, heads, h, D) + d]) : 0.0f;
  }
}

// One query row's online-softmax state: o holds this lane's dims lane, lane+32, ...
template <int D>
struct RowState {
  static constexpr int PER_LANE = (D + 31) / 32;
  float m = -INFINITY, l = 0.0f, o[PER_LANE] = {};

  // Folds in one score per lane (lane j <-> key j of the tile, -inf if hidden)
  // and the tile's values vs[j][d].
  template <int STRIDE>
  __device__ void update(float s, const float (*vs)[STRIDE], int lane) {
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) return;  // nothing visible yet (warp-uniform)
    const float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
    const float alpha = __expf(m - m_new);
    l = l * alpha + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) o[i] *= alpha;
    for (int j = 0; j < ATT_BK; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < D) o[i] += pj * vs[j][d];
      }
    }
  }

  __device__ void store(bf16 *out, float *lse, int t, int heads, int h, int lane) const {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int d = lane + 32 * i;
      if (d < D) out[head_off(t, heads, h, D) + d] = to_bf16(o[i] * inv);
    }
    if (lane == 0) lse[(int64_t)t * heads + h] = m + __logf(l);
  }
};

template <int D>
static __device__ void attention_forward_impl(const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *cu_q,
                                              const int32_t *cu_k, const int32_t *tile_seg, const int32_t *tile_row,
                                              ActialAttentionParams p, bf16 *out, float *lse) {
  __shared__ float qs[FWD_BQ][D];
  __shared__ float ks[ATT_BK][D + 1];  // +1: lanes read different rows, same column
  __shared__ float vs[ATT_BK][D];
  const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int seg = tile_seg[blockIdx.x], q0 = tile_row[blockIdx.x];
  const int q_begin = cu_q[seg], q_end = cu_q[seg + 1], k_begin = cu_k[seg], k_end = cu_k[seg + 1];
  const int shift = (k_end - k_begin) - (q_end - q_begin);  // query i sits at key position i + shift
  const int kvh = h / (p.q_heads / p.kv_heads);
  for (int e = threadIdx.x; e < FWD_BQ * D; e += blockDim.x) {
    const int r = e / D, d = e % D, t = q0 + r;
    qs[r][d] = t < q_end ? bf(q[head_off(t, p.q_heads, h, D) + d]) * p.scale : 0.0f;
  }
  const int last_q = min(q0 + FWD_BQ, q_end) - 1;
  const int k_stop = p.causal ? min(k_end, k_begin + (last_q - q_begin) + shift + 1) : k_end;
  RowState<D> st[FWD_ROWS];
  for (int kt = k_begin; kt < k_stop; kt += ATT_BK) {
    __syncthreads();  // the previous tile is consumed (and qs is written)
    load_tile<D, D + 1>(ks, k, kt, k_stop, p.kv_heads, kvh);
    load_tile<D, D>(vs, v, kt, k_stop, p.kv_heads, kvh);
    __syncthreads();
    const int key = kt + lane;
#pragma unroll
    for (int r = 0; r < FWD_ROWS; ++r) {
      const int row = warp * FWD_ROWS + r, t = q0 + row;
      if (t >= q_end) break;  // warp-uniform
      float s = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) s += qs[row][d] * ks[lane][d];
      const bool visible = key < k_stop && (!p.causal || key - k_begin <= t - q_begin + shift);
      st[r].update(visible ? s : -INFINITY, vs, lane);
    }
  }
#pragma unroll
  for (int r = 0; r < FWD_ROWS; ++r) {
    const int t = q0 + warp * FWD_ROWS + r;
    if (t < q_end) st[r].store(out, lse, t, p.q_heads, h, lane);
  }
}

#define FWD_ARGS                                                                                               \
  const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *cu_q, const int32_t *cu_k, const int32_t *tile_seg, \
      const int32_t *tile_row, ActialAttentionParams p, bf16 *out, float *lse
#define FWD_PASS q, k, v, cu_q, cu_k, tile_seg, tile_row, p, out, lse

extern "C" __global__ void __launch_bounds__(FWD_WARPS * 32) attention_forward_d32(FWD_ARGS) {
  attention_forward_impl<32>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(FWD_WARPS * 32) attention_forward_d64(FWD_ARGS) {
  attention_forward_impl<64>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(FWD_WARPS * 32) attention_forward_d80(FWD_ARGS) {
  attention_forward_impl<80>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(FWD_WARPS * 32) attention_forward_d128(FWD_ARGS) {
  attention_forward_impl<128>(FWD_PASS);
}

// delta[t, h] = sum_d dout[t, h, d] * out[t, h, d]: the rowsum(dO o O) of the
// softmax backward. One warp per (token, head).
extern "C" __global__ void attention_backward_delta(const bf16 *out, const bf16 *dout, float *delta, int rows,
                                                    int head_dim) {
  const int warps_per_block = blockDim.x / 32;
  const int64_t row = (int64_t)blockIdx.x * warps_per_block + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  float acc = 0.0f;
  for (int d = lane; d < head_dim; d += 32) acc += bf(out[row * head_dim + d]) * bf(dout[row * head_dim + d]);
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// dQ = scale * dS K with dS = P o (dO V^T - delta), P from the saved lse.
// Self-attention only (cu_q == cu_k), as the CPU backward.
template <int D>
static __device__ void attention_backward_dq_impl(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                                  const float *lse, const float *delta, const int32_t *cu,
                                                  const int32_t *tile_seg, const int32_t *tile_row,
                                                  ActialAttentionParams p, bf16 *dq) {
  constexpr int PER_LANE = (D + 31) / 32;
  __shared__ float qs[DQ_BQ][D];
  __shared__ float dos[DQ_BQ][D];
  __shared__ float ks[ATT_BK][D + 1];
  __shared__ float vs[ATT_BK][D + 1];
  const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int seg = tile_seg[blockIdx.x], q0 = tile_row[blockIdx.x];
  const int begin = cu[seg], end = cu[seg + 1];
  const int kvh = h / (p.q_heads / p.kv_heads);
  for (int e = threadIdx.x; e < DQ_BQ * D; e += blockDim.x) {
    const int r = e / D, d = e % D, t = q0 + r;
    qs[r][d] = t < end ? bf(q[head_off(t, p.q_heads, h, D) + d]) * p.scale : 0.0f;
    dos[r][d] = t < end ? bf(dout[head_off(t, p.q_heads, h, D) + d]) : 0.0f;
  }
  const int last_q = min(q0 + DQ_BQ, end) - 1;
  const int k_stop = p.causal ? last_q + 1 : end;
  float acc[DQ_ROWS][PER_LANE] = {};
  for (int kt = begin; kt < k_stop; kt += ATT_BK) {
    __syncthreads();
    load_tile<D, D + 1>(ks, k, kt, k_stop, p.kv_heads, kvh);
    load_tile<D, D + 1>(vs, v, kt, k_stop, p.kv_heads, kvh);
    __syncthreads();
    const int key = kt + lane;
#pragma unroll
    for (int r = 0; r < DQ_ROWS; ++r) {
      const int row = warp * DQ_ROWS + r, t = q0 + row;
      if (t >= end) break;
      float s = 0.0f, dp = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) {
        s += qs[row][d] * ks[lane][d];
        dp += dos[row][d] * vs[lane][d];
      }
      const bool visible = key < k_stop && (!p.causal || key <= t);
      const int64_t lt = (int64_t)t * p.q_heads + h;
      const float pr = visible ? __expf(s - lse[lt]) : 0.0f;
      const float ds = pr * (dp - delta[lt]);
      for (int j = 0; j < ATT_BK; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[r][i] += dsj * ks[j][d];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < DQ_ROWS; ++r) {
    const int t = q0 + warp * DQ_ROWS + r;
    if (t >= end) break;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int d = lane + 32 * i;
      if (d < D) dq[head_off(t, p.q_heads, h, D) + d] = to_bf16(acc[r][i] * p.scale);
    }
  }
}

// dV = P^T dO and dK = scale * dS^T Q for a tile of keys of one kv head, summed
// over the query heads that share it (GQA). Each warp owns DKV_KEYS keys; lanes
// split the head dim; queries stream through shared memory.
template <int D>
static __device__ void attention_backward_dkv_impl(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                                   const float *lse, const float *delta, const int32_t *cu,
                                                   const int32_t *tile_seg, const int32_t *tile_row,
                                                   ActialAttentionParams p, bf16 *dk, bf16 *dv) {
  constexpr int PER_LANE = (D + 31) / 32;
  __shared__ float qs[DKV_BQ][D];
  __shared__ float dos[DKV_BQ][D];
  __shared__ float ls[DKV_BQ], dels[DKV_BQ];
  const int g = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int seg = tile_seg[blockIdx.x], k0 = tile_row[blockIdx.x];
  const int begin = cu[seg], end = cu[seg + 1];
  const int rep = p.q_heads / p.kv_heads;
  float kr[DKV_KEYS][PER_LANE], vr[DKV_KEYS][PER_LANE];
  float dkr[DKV_KEYS][PER_LANE] = {}, dvr[DKV_KEYS][PER_LANE] = {};
#pragma unroll
  for (int c = 0; c < DKV_KEYS; ++c) {
    const int key = k0 + warp * DKV_KEYS + c;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int d = lane + 32 * i;
      const bool ok = key < end && d < D;
      kr[c][i] = ok ? bf(k[head_off(key, p.kv_heads, g, D) + d]) : 0.0f;
      vr[c][i] = ok ? bf(v[head_off(key, p.kv_heads, g, D) + d]) : 0.0f;
    }
  }
  // Causal: queries before the tile's first key see none of its keys.
  const int q_first = p.causal ? k0 : begin;
  for (int h = g * rep; h < (g + 1) * rep; ++h) {
    for (int qt = q_first; qt < end; qt += DKV_BQ) {
      __syncthreads();
      for (int e = threadIdx.x; e < DKV_BQ * D; e += blockDim.x) {
        const int r = e / D, d = e % D, t = qt + r;
        qs[r][d] = t < end ? bf(q[head_off(t, p.q_heads, h, D) + d]) : 0.0f;
        dos[r][d] = t < end ? bf(dout[head_off(t, p.q_heads, h, D) + d]) : 0.0f;
      }
      for (int r = threadIdx.x; r < DKV_BQ; r += blockDim.x) {
        const int t = qt + r;
        ls[r] = t < end ? lse[(int64_t)t * p.q_heads + h] : 0.0f;
        dels[r] = t < end ? delta[(int64_t)t * p.q_heads + h] : 0.0f;
      }
      __syncthreads();
      const int rows = min(DKV_BQ, end - qt);
      for (int r = 0; r < rows; ++r) {
        const int t = qt + r;
#pragma unroll
        for (int c = 0; c < DKV_KEYS; ++c) {
          const int key = k0 + warp * DKV_KEYS + c;
          float s = 0.0f, dp = 0.0f;
#pragma unroll
          for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < D) {
              s += qs[r][d] * kr[c][i];
              dp += dos[r][d] * vr[c][i];
            }
          }
          s = warp_sum(s) * p.scale;
          dp = warp_sum(dp);
          const bool visible = key < end && (!p.causal || key <= t);
          const float pr = visible ? __expf(s - ls[r]) : 0.0f;
          const float ds = pr * (dp - dels[r]) * p.scale;
#pragma unroll
          for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < D) {
              dvr[c][i] += pr * dos[r][d];
              dkr[c][i] += ds * qs[r][d];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < DKV_KEYS; ++c) {
    const int key = k0 + warp * DKV_KEYS + c;
    if (key >= end) break;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int d = lane + 32 * i;
      if (d < D) {
        dk[head_off(key, p.kv_heads, g, D) + d] = to_bf16(dkr[c][i]);
        dv[head_off(key, p.kv_heads, g, D) + d] = to_bf16(dvr[c][i]);
      }
    }
  }
}

#define BWD_ARGS                                                                                            \
  const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse, const float *delta,        \
      const int32_t *cu, const int32_t *tile_seg, const int32_t *tile_row, ActialAttentionParams p
#define BWD_PASS q, k, v, dout, lse, delta, cu, tile_seg, tile_row, p

extern "C" __global__ void __launch_bounds__(DQ_WARPS * 32) attention_backward_dq_d32(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_impl<32>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(DQ_WARPS * 32) attention_backward_dq_d64(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_impl<64>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(DQ_WARPS * 32) attention_backward_dq_d80(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_impl<80>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(DQ_WARPS * 32) attention_backward_dq_d128(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_impl<128>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(DKV_WARPS * 32)
    attention_backward_dkv_d32(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_impl<32>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(DKV_WARPS * 32)
    attention_backward_dkv_d64(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_impl<64>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(DKV_WARPS * 32)
    attention_backward_dkv_d80(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_impl<80>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(DKV_WARPS * 32)
    attention_backward_dkv_d128(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_impl<128>(BWD_PASS, dk, dv);
}

// Decoding for GRPO groups (cascade): the G samples of a group share one prompt
// prefix KV and each has its own suffix KV (the tokens it generated so far). One
// block per (group, query head), one warp per sample with one query token each.
// The prefix streams through shared memory once per block and serves every
// sample of the group (G times less prefix traffic than G separate caches);
// then each warp continues its online softmax over its own suffix from global
// memory. No mask: a decoding query sees the whole prefix and its own suffix.
template <int D>
static __device__ void attention_decode_cascade_impl(const bf16 *q, const bf16 *prefix_k, const bf16 *prefix_v,
                                                     const int32_t *cu_prefix, const bf16 *suffix_k,
                                                     const bf16 *suffix_v, const int32_t *cu_suffix,
                                                     const int32_t *cu_group, ActialAttentionParams p, bf16 *out,
                                                     float *lse) {
  constexpr int PER_LANE = (D + 31) / 32;
  __shared__ float ks[ATT_BK][D + 1];
  __shared__ float vs[ATT_BK][D];
  const int grp = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvh = h / (p.q_heads / p.kv_heads);
  const int sample = cu_group[grp] + warp;
  const bool active = sample < cu_group[grp + 1];
  float qr[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int d = lane + 32 * i;
    qr[i] = active && d < D ? bf(q[head_off(sample, p.q_heads, h, D) + d]) * p.scale : 0.0f;
  }
  RowState<D> st;
  const int pb = cu_prefix[grp], pe = cu_prefix[grp + 1];
  for (int kt = pb; kt < pe; kt += ATT_BK) {
    __syncthreads();
    load_tile<D, D + 1>(ks, prefix_k, kt, pe, p.kv_heads, kvh);
    load_tile<D, D>(vs, prefix_v, kt, pe, p.kv_heads, kvh);
    __syncthreads();
    if (!active) continue;  // idle warps still help load and reach the barriers
    // Scores: lane j owns key j; the query is spread over the lanes, so gather
    // it per dim with shuffles.
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i)
      for (int src = 0; src < 32; ++src) {
        const int d = src + 32 * i;
        const float qd = __shfl_sync(0xffffffffu, qr[i], src);
        if (d < D) s += qd * ks[lane][d];
      }
    st.update(kt + lane < pe ? s : -INFINITY, vs, lane);
  }
  if (!active) return;
  // The sample's own suffix, straight from global memory (short, not shared).
  const int sb = cu_suffix[sample], se = cu_suffix[sample + 1];
  for (int kt = sb; kt < se; kt += ATT_BK) {
    const int key = kt + lane;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i)
      for (int src = 0; src < 32; ++src) {
        const int d = src + 32 * i;
        const float qd = __shfl_sync(0xffffffffu, qr[i], src);
        if (d < D && key < se) s += qd * bf(suffix_k[head_off(key, p.kv_heads, kvh, D) + d]);
      }
    const float sc = key < se ? s : -INFINITY;
    const float m_new = fmaxf(st.m, warp_max(sc));
    const float pr = key < se ? __expf(sc - m_new) : 0.0f;
    const float alpha = __expf(st.m - m_new);
    st.l = st.l * alpha + warp_sum(pr);
    st.m = m_new;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) st.o[i] *= alpha;
    const int n = min(ATT_BK, se - kt);
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, pr, j);
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < D) st.o[i] += pj * bf(suffix_v[head_off(kt + j, p.kv_heads, kvh, D) + d]);
      }
    }
  }
  st.store(out, lse, sample, p.q_heads, h, lane);
}

#define DEC_ARGS                                                                                              \
  const bf16 *q, const bf16 *prefix_k, const bf16 *prefix_v, const int32_t *cu_prefix, const bf16 *suffix_k,  \
      const bf16 *suffix_v, const int32_t *cu_suffix, const int32_t *cu_group, ActialAttentionParams p, bf16 *out, \
      float *lse
#define DEC_PASS q, prefix_k, prefix_v, cu_prefix, suffix_k, suffix_v, cu_suffix, cu_group, p, out, lse

extern "C" __global__ void attention_decode_cascade_d32(DEC_ARGS) { attention_decode_cascade_impl<32>(DEC_PASS); }
extern "C" __global__ void attention_decode_cascade_d64(DEC_ARGS) { attention_decode_cascade_impl<64>(DEC_PASS); }
extern "C" __global__ void attention_decode_cascade_d80(DEC_ARGS) { attention_decode_cascade_impl<80>(DEC_PASS); }
extern "C" __global__ void attention_decode_cascade_d128(DEC_ARGS) {
  attention_decode_cascade_impl<128>(DEC_PASS);
}
