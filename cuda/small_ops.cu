// Small ops: RMSNorm, rotary embeddings, SwiGLU, erf GELU, residual add, casts,
// and the row gathers / scatters of embeddings and image features. Each kernel's
// CPU twin is in src/cpu/{norm,rope,activation,embedding}.rs; bf16 in and out,
// f32 arithmetic.
#include "common.cuh"

// hot: rms_norm_forward rms_norm_backward add_rms_norm_forward

// One block per row: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
extern "C" __global__ void rms_norm_forward(const bf16 *x, const bf16 *w, bf16 *y, float *rstd, int rows, int dim,
                                            float eps) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  if (row >= rows) return;
  const bf16 *xr = x + (int64_t)row * dim;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    const float v = bf(xr[c]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss, scratch) / dim + eps);
  for (int c = threadIdx.x; c < dim; c += blockDim.x) y[(int64_t)row * dim + c] = to_bf16(bf(xr[c]) * r * bf(w[c]));
  if (threadIdx.x == 0) rstd[row] = r;
}

// The decoder's residual add fused with the next RMSNorm: h = x + residual
// (written: it is the next residual), y = rmsnorm(h). One read of x and residual
// instead of writing h and reading it back. One block per row.
extern "C" __global__ void add_rms_norm_forward(const bf16 *x, const bf16 *residual, const bf16 *w, bf16 *h,
                                                bf16 *y, float *rstd, int rows, int dim, float eps) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  if (row >= rows) return;
  const int64_t o = (int64_t)row * dim;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    // Round the sum to bf16 first: y must normalise exactly the h that is stored.
    const bf16 hv = to_bf16(bf(x[o + c]) + bf(residual[o + c]));
    h[o + c] = hv;
    ss += bf(hv) * bf(hv);
  }
  const float r = rsqrtf(block_sum(ss, scratch) / dim + eps);
  for (int c = threadIdx.x; c < dim; c += blockDim.x) y[o + c] = to_bf16(bf(h[o + c]) * r * bf(w[c]));
  if (threadIdx.x == 0) rstd[row] = r;
}

// Rows are split over the grid; block b writes its share of dw into
// dw_partial[b, :] (no atomics, so the sum is the same on every run) and
// column_sum_accumulate adds the partials into dw. dw_partial == NULL: frozen w.
// dx = rstd * (dy*w - xhat * mean(dy*w*xhat)), xhat = x * rstd.
extern "C" __global__ void rms_norm_backward(const bf16 *x, const bf16 *w, const float *rstd, const bf16 *dy,
                                             bf16 *dx, float *dw_partial, int rows, int dim) {
  __shared__ float scratch[32];
  float *partial = dw_partial ? dw_partial + (int64_t)blockIdx.x * dim : nullptr;
  if (partial)
    for (int c = threadIdx.x; c < dim; c += blockDim.x) partial[c] = 0.0f;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t o = (int64_t)row * dim;
    const float r = rstd[row];
    float acc = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) acc += bf(dy[o + c]) * bf(w[c]) * bf(x[o + c]);
    const float mean = block_sum(acc, scratch) * r / dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      const float g = bf(dy[o + c]), xhat = bf(x[o + c]) * r;
      dx[o + c] = to_bf16(r * (g * bf(w[c]) - xhat * mean));
      if (partial) partial[c] += g * xhat;
    }
  }
}

// dst[c] += sum_b partial[b, c], b < blocks (f32).
extern "C" __global__ void column_sum_accumulate(const float *partial, int blocks, int dim, float *dst) {
  GRID_STRIDE(c, dim) {
    float s = 0.0f;
    for (int b = 0; b < blocks; ++b) s += partial[(int64_t)b * dim + c];
    dst[c] += s;
  }
}

// Rotary embedding in the rotate_half layout, x [T, H, D], tables cos/sin [T, D]
// (f32). Forward: y[i] = x[i] c[i] - x[i+h] s[i], y[i+h] = x[i+h] c[i+h] + x[i] s[i+h].
// backward != 0 applies the transpose (the gradient): dx[i] = dy[i] c[i] +
// dy[i+h] s[i+h], dx[i+h] = dy[i+h] c[i+h] - dy[i] s[i]. In-place (y == x) is fine.
extern "C" __global__ void rope_apply(const bf16 *x, const float *cos_t, const float *sin_t, bf16 *y, int tokens,
                                      int heads, int head_dim, int backward) {
  const int half = head_dim / 2;
  GRID_STRIDE(idx, (int64_t)tokens * heads * half) {
    const int i = (int)(idx % half);
    const int64_t th = idx / half;  // t * heads + h
    const int64_t t = th / heads;
    const int64_t o = th * head_dim;
    const float a = bf(x[o + i]), b = bf(x[o + i + half]);
    const float c0 = cos_t[t * head_dim + i], c1 = cos_t[t * head_dim + i + half];
    const float s0 = sin_t[t * head_dim + i], s1 = sin_t[t * head_dim + i + half];
    float ya, yb;
    if (backward) {
      ya = a * c0 + b * s1;
      yb = b * c1 - a * s0;
    } else {
      ya = a * c0 - b * s0;
      yb = b * c1 + a * s1;
    }
    y[o + i] = to_bf16(ya);
    y[o + i + half] = to_bf16(yb);
  }
}

static __device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

// y = silu(gate) * up.
extern "C" __global__ void swiglu_forward(const bf16 *gate, const bf16 *up, bf16 *y, int64_t n) {
  GRID_STRIDE(i, n) {
    const float g = bf(gate[i]);
    y[i] = to_bf16(g * sigmoidf(g) * bf(up[i]));
  }
}

// d_up = dy silu(g); d_gate = dy u s (1 + g (1 - s)), s = sigmoid(g).
extern "C" __global__ void swiglu_backward(const bf16 *gate, const bf16 *up, const bf16 *dy, bf16 *d_gate,
                                           bf16 *d_up, int64_t n) {
  GRID_STRIDE(i, n) {
    const float g = bf(gate[i]), u = bf(up[i]), d = bf(dy[i]);
    const float s = sigmoidf(g);
    d_up[i] = to_bf16(d * g * s);
    d_gate[i] = to_bf16(d * u * s * (1.0f + g * (1.0f - s)));
  }
}

// Exact GELU 0.5 x (1 + erf(x / sqrt 2)), not the tanh approximation.
extern "C" __global__ void gelu_forward(const bf16 *x, bf16 *y, int64_t n) {
  GRID_STRIDE(i, n) {
    const float v = bf(x[i]);
    y[i] = to_bf16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
  }
}

// dx = dy (Phi(x) + x phi(x)).
extern "C" __global__ void gelu_backward(const bf16 *x, const bf16 *dy, bf16 *dx, int64_t n) {
  GRID_STRIDE(i, n) {
    const float v = bf(x[i]);
    const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    const float pdf = 0.3989422804014327f * __expf(-0.5f * v * v);
    dx[i] = to_bf16(bf(dy[i]) * (cdf + v * pdf));
  }
}

// y = a + b (the residual add).
extern "C" __global__ void add_bf16(const bf16 *a, const bf16 *b, bf16 *y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = to_bf16(bf(a[i]) + bf(b[i]));
}

// a += alpha * b in f32 (gradient accumulation).
extern "C" __global__ void axpy_f32(float *a, const float *b, float alpha, int64_t n) {
  GRID_STRIDE(i, n) a[i] += alpha * b[i];
}

extern "C" __global__ void cast_f32_to_bf16(const float *x, bf16 *y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = to_bf16(x[i]);
}

extern "C" __global__ void cast_bf16_to_f32(const bf16 *x, float *y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = bf(x[i]);
}

// Strided element copy (params.h): permute, inner-dim narrow, cat. Bit copies,
// so one kernel per element size serves every dtype of that size.
template <typename T>
__device__ void strided_copy(const T *src, T *dst, const ActialStridedCopy &p) {
  GRID_STRIDE(e, p.numel) {
    int64_t rest = e, s = 0, d = 0;
    for (int k = p.rank - 1; k >= 0; --k) {
      const int64_t i = rest % p.dims[k];
      rest /= p.dims[k];
      s += i * p.src_strides[k];
      d += i * p.dst_strides[k];
    }
    dst[d] = src[s];
  }
}
extern "C" __global__ void strided_copy_u16(const uint16_t *src, uint16_t *dst, ActialStridedCopy p) {
  strided_copy(src, dst, p);
}
extern "C" __global__ void strided_copy_u32(const uint32_t *src, uint32_t *dst, ActialStridedCopy p) {
  strided_copy(src, dst, p);
}

// out[i, :] = src[idx[i], :] (embedding lookup, row permutations). The host
// range-checks idx.
extern "C" __global__ void gather_rows(const bf16 *src, const int32_t *idx, bf16 *out, int n_idx, int dim) {
  GRID_STRIDE(e, (int64_t)n_idx * dim) {
    const int64_t i = e / dim;
    out[e] = src[(int64_t)idx[i] * dim + e % dim];
  }
}

// The same gather for f32 rows (rotary tables in the vision window order).
extern "C" __global__ void gather_rows_f32(const float *src, const int32_t *idx, float *out, int n_idx, int dim) {
  GRID_STRIDE(e, (int64_t)n_idx * dim) {
    const int64_t i = e / dim;
    out[e] = src[(int64_t)idx[i] * dim + e % dim];
  }
}

// x[r, :] *= scale[r] (per-sample loss weights on dlogits).
extern "C" __global__ void scale_rows_bf16(bf16 *x, const float *scale, int rows, int cols) {
  GRID_STRIDE(e, (int64_t)rows * cols) x[e] = to_bf16(bf(x[e]) * scale[e / cols]);
}

// dst[idx[i], :] += src[i, :] in f32, skipping rows with skip[i] != 0 (skip may
// be NULL). Atomic: repeated indices (the same token twice) add in an
// unspecified order, so the last bits can differ between runs.
extern "C" __global__ void scatter_add_rows(float *dst, const int32_t *idx, const bf16 *src, const uint8_t *skip,
                                            int n_idx, int dim) {
  GRID_STRIDE(e, (int64_t)n_idx * dim) {
    const int64_t i = e / dim;
    if (skip && skip[i]) continue;
    atomicAdd(&dst[(int64_t)idx[i] * dim + e % dim], bf(src[e]));
  }
}

// x[pos[i], :] = rows[i, :] (image features into the <|image_pad|> positions).
extern "C" __global__ void overwrite_rows(bf16 *x, const int32_t *pos, const bf16 *rows, int n, int dim) {
  GRID_STRIDE(e, (int64_t)n * dim) {
    const int64_t i = e / dim;
    x[(int64_t)pos[i] * dim + e % dim] = rows[e];
  }
}

// dst[pairs[2i]] = pairs[2i + 1] (block-table entries of a paged KV cache,
// changed a few at a time).
extern "C" __global__ void scatter_i32(int32_t *dst, const int32_t *pairs, int n) {
  GRID_STRIDE(i, (int64_t)n) dst[pairs[2 * i]] = pairs[2 * i + 1];
}

// y = softmax(scale * x) per row, one block per row (the unfused attention
// baseline of the benches: GEMM, this, GEMM).
extern "C" __global__ void softmax_rows(const bf16 *x, bf16 *y, int rows, int cols, float scale) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  if (r >= rows) return;
  const bf16 *xr = x + (int64_t)r * cols;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, bf(xr[c]) * scale);
  m = block_max(m, scratch);
  float z = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) z += __expf(bf(xr[c]) * scale - m);
  const float inv = 1.0f / block_sum(z, scratch);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    y[(int64_t)r * cols + c] = to_bf16(__expf(bf(xr[c]) * scale - m) * inv);
}
