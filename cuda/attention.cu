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
// Two forwards with one contract: the correct-first SIMT version (f32 FMAs on
// bf16 loads, one key per lane for scores, lanes split the head dim for
// outputs), the reference on the device, and the tensor-core version
// (attention_forward_mma_d*, below), the default. The backward has the same
// pair (attention_backward_{dq,dkv}_mma_d* on tensor cores); the cascade decode
// is SIMT.
//
// Work split: blocks own a tile of one segment's queries (forward, dQ) or keys
// (dK/dV) for one head; the host builds the tile tables (tile -> segment, first
// row), so ragged segments need no padding.
#include "common.cuh"

// hot: attention_forward_d32 attention_forward_d64 attention_forward_d80 attention_forward_d128
// hot: attention_forward_mma_d32 attention_forward_mma_d64 attention_forward_mma_d80 attention_forward_mma_d128
// hot: attention_decode_paged_d64 attention_decode_paged_d128
// hot: attention_backward_dq_d80 attention_backward_dq_d128 attention_backward_dkv_d80 attention_backward_dkv_d128
// hot: attention_backward_dq_mma_d32 attention_backward_dq_mma_d64 attention_backward_dq_mma_d80 attention_backward_dq_mma_d128
// hot: attention_backward_dkv_mma_d32 attention_backward_dkv_mma_d64 attention_backward_dkv_mma_d80 attention_backward_dkv_mma_d128

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

// ---- tensor-core forward ---------------------------------------------------------
//
// The same contract as attention_forward_d*, on mma.m16n8k16 (FlashAttention-2's
// work split): each warp owns 16 query rows and keeps its scores, probabilities
// and output in mma fragments, so the online softmax needs only quad shuffles
// and P feeds the P·V mma straight from registers (the accumulator layout of
// two 8-key tiles is the "a" layout of one 16-key slab). K and V tiles are
// staged in shared memory as bf16 and read with ldmatrix. Differences from the
// SIMT kernel: P is rounded to bf16 before P·V (as FlashAttention does), the
// scale is applied to the f32 scores. Not yet pipelined (no cp.async double
// buffer): the next step once a GPU can measure it.
// Loads rows r0.. of one head of a [T, H, D] tensor into a [ROWS][STRIDE] bf16
// shared tile in 16-byte chunks; rows at or past `stop` are zero.
template <int D, int STRIDE, int ROWS>
static __device__ void load_tile_bf16(bf16 *dst, const bf16 *src, int r0, int stop, int heads, int h) {
  constexpr int CHUNKS = D / 8;
  for (int e = threadIdx.x; e < ROWS * CHUNKS; e += blockDim.x) {
    const int j = e / CHUNKS, ch = e % CHUNKS, row = r0 + j;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (row < stop) x = *reinterpret_cast<const uint4 *>(src + head_off(row, heads, h, D) + ch * 8);
    *reinterpret_cast<uint4 *>(dst + j * STRIDE + ch * 8) = x;
  }
}

// The "a" fragments (16 rows x D) of rows r0.. of one head of a [T, H, D]
// tensor, straight from global memory; rows at or past `stop` are zero.
template <int D>
static __device__ void load_a_frags(uint32_t (*f)[4], const bf16 *src, int r0, int stop, int heads, int h) {
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = r0 + g + (i & 1) * 8, col = kk * 16 + 2 * c + (i >> 1) * 8;
      f[kk][i] = t < stop ? *reinterpret_cast<const uint32_t *>(src + head_off(t, heads, h, D) + col) : 0u;
    }
}

// acc[KN][4] += A (16 x D, fragments a[D/16][4]) · Bᵀ, where B is a row-major
// [KN*8][STRIDE] shared tile (n rows, D columns): S = Q Kᵀ and its relatives.
template <int D, int STRIDE, int KN>
static __device__ __forceinline__ void mma_abt(float (*acc)[4], const uint32_t (*a)[4], const bf16 *b) {
  const int lane = threadIdx.x % 32, mat = lane / 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
    for (int n = 0; n < KN; n += 2) {
      uint32_t f[4];  // matrices (n, k lo), (n, k hi), (n+1, k lo), (n+1, k hi)
      ldmatrix_x4(f, b + ((n + (mat >> 1)) * 8 + lane % 8) * STRIDE + kk * 16 + (mat & 1) * 8);
      mma_bf16_16816(acc[n], a[kk], f);
      mma_bf16_16816(acc[n + 1], a[kk], f + 2);
    }
}

// The same with A read from shared memory too: `a` points at the warp's 16
// rows of a row-major [rows][STRIDE] tile (lanes 0-15 give rows 0-15 at dims
// kk*16, lanes 16-31 the same rows at kk*16 + 8: matrices a[0..3] in order).
template <int D, int STRIDE, int KN>
static __device__ __forceinline__ void mma_abt_shared_a(float (*acc)[4], const bf16 *a, const bf16 *b) {
  const int lane = threadIdx.x % 32, mat = lane / 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(af, a + (lane % 16) * STRIDE + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int n = 0; n < KN; n += 2) {
      uint32_t f[4];
      ldmatrix_x4(f, b + ((n + (mat >> 1)) * 8 + lane % 8) * STRIDE + kk * 16 + (mat & 1) * 8);
      mma_bf16_16816(acc[n], af, f);
      mma_bf16_16816(acc[n + 1], af, f + 2);
    }
  }
}

// acc[D/8][4] += P (16 x K, as KN accumulator tiles p[KN][4]) · B, where B is a
// row-major [K][STRIDE] shared tile (K rows, D columns): O += P V and relatives.
template <int D, int STRIDE, int KN>
static __device__ __forceinline__ void mma_pb(float (*acc)[4], const float (*p)[4], const bf16 *b) {
  const int lane = threadIdx.x % 32, mat = lane / 8;
#pragma unroll
  for (int j = 0; j < KN / 2; ++j) {
    const uint32_t a[4] = {pack_bf16x2(p[2 * j][0], p[2 * j][1]), pack_bf16x2(p[2 * j][2], p[2 * j][3]),
                           pack_bf16x2(p[2 * j + 1][0], p[2 * j + 1][1]),
                           pack_bf16x2(p[2 * j + 1][2], p[2 * j + 1][3])};
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {
      uint32_t f[4];  // matrices (dn, k lo), (dn, k hi), (dn+1, k lo), (dn+1, k hi), read transposed
      ldmatrix_x4_trans(f, b + (j * 16 + (mat & 1) * 8 + lane % 8) * STRIDE + (dn + (mat >> 1)) * 8);
      mma_bf16_16816(acc[dn], a, f);
      mma_bf16_16816(acc[dn + 1], a, f + 2);
    }
  }
}

// Stores a warp's 16 x D accumulator rows r0.. (times `mul`) into one head of a
// [T, H, D] bf16 tensor; rows at or past `stop` are skipped.
template <int D>
static __device__ void store_rows(const float (*acc)[4], float mul, bf16 *dst, int r0, int stop, int heads, int h) {
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = r0 + g + 8 * r;
    if (t >= stop) continue;
    bf16 *out = dst + head_off(t, heads, h, D) + 2 * c;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t *>(out + dn * 8) = pack_bf16x2(acc[dn][2 * r] * mul, acc[dn][2 * r + 1] * mul);
  }
}

#define MMA_WARPS 4
#define MMA_BQ (MMA_WARPS * 16)  // query rows per block (one m16 tile per warp)
#define MMA_BK 64                // keys per shared-memory tile

template <int D>
static __device__ void attention_forward_mma_impl(const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *cu_q,
                                                  const int32_t *cu_k, const int32_t *tile_seg,
                                                  const int32_t *tile_row, ActialAttentionParams p, bf16 *out,
                                                  float *lse) {
  static_assert(D % 16 == 0, "head dim must be a multiple of 16 (k-slabs of Q Kt, pairs of P V n-tiles)");
  constexpr int KS = D / 16;         // k-slabs of the head dim in Q·Kᵀ
  constexpr int DN = D / 8;          // n-tiles of the head dim in P·V
  constexpr int KN = MMA_BK / 8;     // n-tiles of a key tile in Q·Kᵀ
  constexpr int STRIDE = D + 8;      // bf16 per shared row: 16-byte aligned, ldmatrix rows hit distinct banks
  __shared__ __align__(16) bf16 ks[MMA_BK * STRIDE];
  __shared__ __align__(16) bf16 vs[MMA_BK * STRIDE];
  const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int seg = tile_seg[blockIdx.x], q0 = tile_row[blockIdx.x];
  const int q_begin = cu_q[seg], q_end = cu_q[seg + 1], k_begin = cu_k[seg], k_end = cu_k[seg + 1];
  const int shift = (k_end - k_begin) - (q_end - q_begin);  // query i sits at key position i + shift
  const int kvh = h / (p.q_heads / p.kv_heads);
  const int r0 = q0 + warp * 16;                 // the warp's first query row
  const int row[2] = {r0 + g, r0 + g + 8};       // this thread's two rows of every fragment

  // Q fragments of the warp's 16 rows, read once from global memory (rows past
  // the segment are zero and never stored).
  uint32_t qf[KS][4];
  load_a_frags<D>(qf, q, r0, q_end, p.q_heads, h);

  float o[DN][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this thread's share of the row sum
  const int last_q = min(q0 + MMA_BQ, q_end) - 1;
  const int k_stop = p.causal ? min(k_end, k_begin + (last_q - q_begin) + shift + 1) : k_end;
  // The last key (relative to k_begin) the warp's first and last rows may see.
  const int first_sees = r0 - q_begin + shift, last_sees = r0 + 15 - q_begin + shift;
  for (int kt = k_begin; kt < k_stop; kt += MMA_BK) {
    __syncthreads();  // the previous tile is consumed
    // Zero past k_stop: 0 · garbage could be NaN.
    load_tile_bf16<D, STRIDE, MMA_BK>(ks, k, kt, k_stop, p.kv_heads, kvh);
    load_tile_bf16<D, STRIDE, MMA_BK>(vs, v, kt, k_stop, p.kv_heads, kvh);
    __syncthreads();
    if (p.causal && kt - k_begin > last_sees) continue;  // the whole tile is above this warp's diagonal

    // S = Q Kᵀ for 16 rows x 64 keys (B[k = dim][n = key] is K's row-major tile).
    float s[KN][4] = {};
    mma_abt<D, STRIDE, KN>(s, qf, ks);

    // Scale, mask, and the online softmax per row (a row's 64 scores live in
    // the 4 threads of a quad).
    const bool unmasked = kt + MMA_BK <= k_stop && (!p.causal || kt + MMA_BK - 1 - k_begin <= first_sees);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < KN; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float x = s[n][i] * p.scale;
        if (!unmasked) {
          const int key = kt + n * 8 + 2 * c + (i & 1), t = row[i >> 1];
          if (key >= k_stop || (p.causal && key - k_begin > t - q_begin + shift)) x = -INFINITY;
        }
        s[n][i] = x;
        mx[i >> 1] = fmaxf(mx[i >> 1], x);
      }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp(-inf - 0) = 0, no NaN
      const float alpha = __expf(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int dn = 0; dn < DN; ++dn) {
        o[dn][2 * r] *= alpha;
        o[dn][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int n = 0; n < KN; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[n][i] = __expf(s[n][i] - base[i >> 1]);
        l[i >> 1] += s[n][i];
      }

    // O += P V: the accumulators of key tiles 2j and 2j+1 are the "a" fragment
    // of 16-key slab j; V's row-major tile is read transposed.
    mma_pb<D, STRIDE, KN>(o, s, vs);
  }

  // Row sums across the quad, then out = O / l and lse = m + log l.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int t = row[r];
    if (t >= q_end) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    bf16 *dst = out + head_off(t, p.q_heads, h, D) + 2 * c;
#pragma unroll
    for (int dn = 0; dn < DN; ++dn)
      *reinterpret_cast<uint32_t *>(dst + dn * 8) = pack_bf16x2(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
    if (c == 0) lse[(int64_t)t * p.q_heads + h] = m[r] + __logf(l[r]);
  }
}

extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) attention_forward_mma_d32(FWD_ARGS) {
  attention_forward_mma_impl<32>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) attention_forward_mma_d64(FWD_ARGS) {
  attention_forward_mma_impl<64>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) attention_forward_mma_d80(FWD_ARGS) {
  attention_forward_mma_impl<80>(FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) attention_forward_mma_d128(FWD_ARGS) {
  attention_forward_mma_impl<128>(FWD_PASS);
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

// ---- tensor-core backward ----------------------------------------------------------
//
// The same contract as attention_backward_dq_d* / _dkv_d*, on mma.m16n8k16.
// Fragment tricks as in the forward: an accumulator pair of 8-wide tiles is the
// "a" fragment of one 16-wide slab; B operands come from row-major shared tiles
// through ldmatrix (plain for "[n][k]" tiles, .trans for "[k][n]" ones).

#define MMA_DQ_BQ 64   // query rows per dQ block (16 per warp)
#define MMA_DQ_BK 32   // keys per shared tile of the dQ kernel
#define MMA_DKV_BK 64  // keys per dK/dV block (16 per warp)
#define MMA_DKV_BQ 16  // queries per shared tile of the dK/dV kernel

// dQ = scale · dS K, dS = P ∘ (dO Vᵀ − delta), P = exp(scale · Q Kᵀ − lse).
// Each warp keeps its 16 rows of Q and dO as fragments; K and V stream through
// shared memory in tiles of 32 keys.
template <int D>
static __device__ void attention_backward_dq_mma_impl(const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
                                                      const float *lse, const float *delta, const int32_t *cu,
                                                      const int32_t *tile_seg, const int32_t *tile_row,
                                                      ActialAttentionParams p, bf16 *dq) {
  constexpr int KS = D / 16, DN = D / 8, KN = MMA_DQ_BK / 8, STRIDE = D + 8;
  __shared__ __align__(16) bf16 ks[MMA_DQ_BK * STRIDE];
  __shared__ __align__(16) bf16 vs[MMA_DQ_BK * STRIDE];
  const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int seg = tile_seg[blockIdx.x], q0 = tile_row[blockIdx.x];
  const int begin = cu[seg], end = cu[seg + 1];
  const int kvh = h / (p.q_heads / p.kv_heads);
  const int r0 = q0 + warp * 16;
  const int row[2] = {r0 + g, r0 + g + 8};
  uint32_t qf[KS][4], df[KS][4];
  load_a_frags<D>(qf, q, r0, end, p.q_heads, h);
  load_a_frags<D>(df, dout, r0, end, p.q_heads, h);
  float lr[2], dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = (int64_t)min(row[r], end - 1) * p.q_heads + h;  // rows past the end: any valid row
    lr[r] = lse[i];
    dr[r] = delta[i];
  }
  float acc[DN][4] = {};
  const int last_q = min(q0 + MMA_DQ_BQ, end) - 1;
  const int k_stop = p.causal ? last_q + 1 : end;
  for (int kt = begin; kt < k_stop; kt += MMA_DQ_BK) {
    __syncthreads();
    load_tile_bf16<D, STRIDE, MMA_DQ_BK>(ks, k, kt, k_stop, p.kv_heads, kvh);
    load_tile_bf16<D, STRIDE, MMA_DQ_BK>(vs, v, kt, k_stop, p.kv_heads, kvh);
    __syncthreads();
    if (r0 >= end || (p.causal && kt > r0 + 15)) continue;  // no row of this warp sees the tile
    float s[KN][4] = {}, dp[KN][4] = {};
    mma_abt<D, STRIDE, KN>(s, qf, ks);
    mma_abt<D, STRIDE, KN>(dp, df, vs);
#pragma unroll
    for (int n = 0; n < KN; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = kt + n * 8 + 2 * c + (i & 1), t = row[i >> 1];
        const bool visible = key < k_stop && t < end && (!p.causal || key <= t);
        const float pr = visible ? __expf(s[n][i] * p.scale - lr[i >> 1]) : 0.0f;
        s[n][i] = pr * (dp[n][i] - dr[i >> 1]);  // dS
      }
    mma_pb<D, STRIDE, KN>(acc, s, ks);
  }
  store_rows<D>(acc, p.scale, dq, r0, end, p.q_heads, h);
}

// dV = Pᵀ dO and dK = scale · dSᵀ Q for 64 keys of one kv head, summed over the
// query heads that share it (GQA). Each warp owns 16 keys; K and V stay in
// shared memory (read as "a" fragments with ldmatrix), queries stream through
// in tiles of 16 with their lse and delta.
template <int D>
static __device__ void attention_backward_dkv_mma_impl(const bf16 *q, const bf16 *k, const bf16 *v,
                                                       const bf16 *dout, const float *lse, const float *delta,
                                                       const int32_t *cu, const int32_t *tile_seg,
                                                       const int32_t *tile_row, ActialAttentionParams p, bf16 *dk,
                                                       bf16 *dv) {
  constexpr int DN = D / 8, QN = MMA_DKV_BQ / 8, STRIDE = D + 8;
  __shared__ __align__(16) bf16 ks[MMA_DKV_BK * STRIDE];
  __shared__ __align__(16) bf16 vs[MMA_DKV_BK * STRIDE];
  __shared__ __align__(16) bf16 qs[MMA_DKV_BQ * STRIDE];
  __shared__ __align__(16) bf16 dos[MMA_DKV_BQ * STRIDE];
  __shared__ float ls[MMA_DKV_BQ], dels[MMA_DKV_BQ];
  const int kvh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int seg = tile_seg[blockIdx.x], k0 = tile_row[blockIdx.x];  // (k0 = first key)
  const int begin = cu[seg], end = cu[seg + 1];
  const int rep = p.q_heads / p.kv_heads;
  const int kw = k0 + warp * 16;  // the warp's first key
  load_tile_bf16<D, STRIDE, MMA_DKV_BK>(ks, k, k0, end, p.kv_heads, kvh);
  load_tile_bf16<D, STRIDE, MMA_DKV_BK>(vs, v, k0, end, p.kv_heads, kvh);
  // (The loop's first barrier publishes ks and vs.) K and V stay in shared
  // memory and are read as "a" fragments per use: holding them in registers
  // spills at D = 128.
  const bf16 *kw_rows = ks + warp * 16 * STRIDE, *vw_rows = vs + warp * 16 * STRIDE;
  float dka[DN][4] = {}, dva[DN][4] = {};
  const int q_first = p.causal ? k0 : begin;  // causal: earlier queries see none of these keys
  for (int h = kvh * rep; h < (kvh + 1) * rep; ++h) {
    for (int qt = q_first; qt < end; qt += MMA_DKV_BQ) {
      __syncthreads();  // the previous query tile is consumed
      load_tile_bf16<D, STRIDE, MMA_DKV_BQ>(qs, q, qt, end, p.q_heads, h);
      load_tile_bf16<D, STRIDE, MMA_DKV_BQ>(dos, dout, qt, end, p.q_heads, h);
      for (int r = threadIdx.x; r < MMA_DKV_BQ; r += blockDim.x) {
        const int t = qt + r;
        ls[r] = t < end ? lse[(int64_t)t * p.q_heads + h] : 0.0f;
        dels[r] = t < end ? delta[(int64_t)t * p.q_heads + h] : 0.0f;
      }
      __syncthreads();
      if (kw >= end || (p.causal && qt + MMA_DKV_BQ - 1 < kw)) continue;  // no query sees this warp's keys
      // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ: 16 keys x 16 queries.
      float st[QN][4] = {}, dpt[QN][4] = {};
      mma_abt_shared_a<D, STRIDE, QN>(st, kw_rows, qs);
      mma_abt_shared_a<D, STRIDE, QN>(dpt, vw_rows, dos);
      float dst[QN][4];
#pragma unroll
      for (int n = 0; n < QN; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int key = kw + g + (i >> 1) * 8, j = n * 8 + 2 * c + (i & 1), t = qt + j;
          const bool visible = key < end && t < end && (!p.causal || key <= t);
          const float pr = visible ? __expf(st[n][i] * p.scale - ls[j]) : 0.0f;
          st[n][i] = pr;                                 // Pᵀ
          dst[n][i] = pr * (dpt[n][i] - dels[j]);        // dSᵀ
        }
      mma_pb<D, STRIDE, QN>(dva, st, dos);
      mma_pb<D, STRIDE, QN>(dka, dst, qs);
    }
  }
  store_rows<D>(dka, p.scale, dk, kw, end, p.kv_heads, kvh);
  store_rows<D>(dva, 1.0f, dv, kw, end, p.kv_heads, kvh);
}

// dQ: (threads, 2) lets ptxas use up to 255 registers; without it, it capped
// d64 at 128 and spilled on sm_80.
#define MMA_BWD_THREADS 128
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS, 2) attention_backward_dq_mma_d32(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_mma_impl<32>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS, 2) attention_backward_dq_mma_d64(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_mma_impl<64>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS, 2) attention_backward_dq_mma_d80(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_mma_impl<80>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS, 2) attention_backward_dq_mma_d128(BWD_ARGS, bf16 *dq) {
  attention_backward_dq_mma_impl<128>(BWD_PASS, dq);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS)
    attention_backward_dkv_mma_d32(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_mma_impl<32>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS)
    attention_backward_dkv_mma_d64(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_mma_impl<64>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS)
    attention_backward_dkv_mma_d80(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_mma_impl<80>(BWD_PASS, dk, dv);
}
extern "C" __global__ void __launch_bounds__(MMA_BWD_THREADS)
    attention_backward_dkv_mma_d128(BWD_ARGS, bf16 *dk, bf16 *dv) {
  attention_backward_dkv_mma_impl<128>(BWD_PASS, dk, dv);
}

// Decoding for GRPO groups (cascade) from a paged KV cache. Keys and values of
// every layer live in a pool of blocks of `block_size` rows ([blocks *
// block_size, Hkv, D]); a block table row maps a sequence's key r to pool row
// table[r / block_size] * block_size + r % block_size. The G samples of a group
// share one prompt prefix (its blocks are referenced, never copied) and each
// has its own suffix blocks (the tokens it generated so far, the newest
// included). One block per (group, query head), one warp per sample with one
// query token each. The prefix streams through shared memory once per block and
// serves every sample of the group (G times less prefix traffic than G
// separate caches); then each warp continues its online softmax over its own
// suffix from global memory. No mask: a decoding query sees the whole prefix
// and its own suffix.
//
// Per step (`rows`, one upload shared by all layers): cu_group [G + 1] (sample
// rows per group), group_slot [G] and prefix_len [G] (the group's prefix table
// row and key count), sample_slot [S] and suffix_len [S] (the sample's suffix
// table row and key count).
template <int D, int STRIDE>
static __device__ void load_paged_tile(float (*dst)[STRIDE], const bf16 *pool, const int32_t *table, int block_size,
                                       int kt, int stop, int heads, int h) {
  for (int e = threadIdx.x; e < ATT_BK * D; e += blockDim.x) {
    const int j = e / D, d = e % D, key = kt + j;
    if (key < stop) {
      const int row = table[key / block_size] * block_size + key % block_size;
      dst[j][d] = bf(pool[head_off(row, heads, h, D) + d]);
    } else {
      dst[j][d] = 0.0f;
    }
  }
}

template <int D>
static __device__ void attention_decode_paged_impl(const bf16 *q, const bf16 *k_pool, const bf16 *v_pool,
                                                   const int32_t *cu_group, const int32_t *group_slot,
                                                   const int32_t *prefix_len, const int32_t *sample_slot,
                                                   const int32_t *suffix_len, const int32_t *prefix_table,
                                                   const int32_t *suffix_table, ActialPagedKv kv,
                                                   ActialAttentionParams p, bf16 *out, float *lse) {
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
  const int32_t *ptab = prefix_table + (int64_t)group_slot[grp] * kv.prefix_table_width;
  const int pe = prefix_len[grp];
  for (int kt = 0; kt < pe; kt += ATT_BK) {
    __syncthreads();
    load_paged_tile<D, D + 1>(ks, k_pool, ptab, kv.block_size, kt, pe, p.kv_heads, kvh);
    load_paged_tile<D, D>(vs, v_pool, ptab, kv.block_size, kt, pe, p.kv_heads, kvh);
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
  const int32_t *stab = suffix_table + (int64_t)sample_slot[sample] * kv.suffix_table_width;
  const int se = suffix_len[sample];
  const int bs = kv.block_size;
  for (int kt = 0; kt < se; kt += ATT_BK) {
    const int key = kt + lane;
    const int row = key < se ? stab[key / bs] * bs + key % bs : 0;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i)
      for (int src = 0; src < 32; ++src) {
        const int d = src + 32 * i;
        const float qd = __shfl_sync(0xffffffffu, qr[i], src);
        if (d < D && key < se) s += qd * bf(k_pool[head_off(row, p.kv_heads, kvh, D) + d]);
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
      const int rj = __shfl_sync(0xffffffffu, row, j);
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < D) st.o[i] += pj * bf(v_pool[head_off(rj, p.kv_heads, kvh, D) + d]);
      }
    }
  }
  st.store(out, lse, sample, p.q_heads, h, lane);
}

#define DEC_ARGS                                                                                            \
  const bf16 *q, const bf16 *k_pool, const bf16 *v_pool, const int32_t *cu_group, const int32_t *group_slot, \
      const int32_t *prefix_len, const int32_t *sample_slot, const int32_t *suffix_len,                     \
      const int32_t *prefix_table, const int32_t *suffix_table, ActialPagedKv kv, ActialAttentionParams p,  \
      bf16 *out, float *lse
#define DEC_PASS                                                                                             \
  q, k_pool, v_pool, cu_group, group_slot, prefix_len, sample_slot, suffix_len, prefix_table, suffix_table, kv, \
      p, out, lse

extern "C" __global__ void attention_decode_paged_d32(DEC_ARGS) { attention_decode_paged_impl<32>(DEC_PASS); }
extern "C" __global__ void attention_decode_paged_d64(DEC_ARGS) { attention_decode_paged_impl<64>(DEC_PASS); }
extern "C" __global__ void attention_decode_paged_d80(DEC_ARGS) { attention_decode_paged_impl<80>(DEC_PASS); }
extern "C" __global__ void attention_decode_paged_d128(DEC_ARGS) { attention_decode_paged_impl<128>(DEC_PASS); }

// Merges two attentions of the same queries over disjoint key sets (the cascade
// fallback for groups wider than one block): per (token, head) row,
// out = (o_a e^{l_a} + o_b e^{l_b}) / (e^{l_a} + e^{l_b}), lse = log(e^{l_a} + e^{l_b}).
// A row with no keys on either side (both lse -inf) gets out 0, lse -inf, as
// the CPU twin (src/ops/attention.rs, merge_attention). One warp per row.
extern "C" __global__ void attention_merge(const bf16 *out_a, const float *lse_a, const bf16 *out_b,
                                           const float *lse_b, bf16 *out, float *lse, int rows, int head_dim) {
  const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const float la = lse_a[r], lb = lse_b[r];
  const float mx = fmaxf(la, lb), base = mx == -INFINITY ? 0.0f : mx;
  const float wa = __expf(la - base), wb = __expf(lb - base), z = wa + wb;
  const float inv = z > 0.0f ? 1.0f / z : 0.0f;
  for (int d = lane; d < head_dim; d += 32) {
    const int64_t i = r * head_dim + d;
    out[i] = to_bf16((bf(out_a[i]) * wa + bf(out_b[i]) * wb) * inv);
  }
  if (lane == 0) lse[r] = base + __logf(z);
}
