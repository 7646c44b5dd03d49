// Softmax losses on one chunk of bf16 logits [rows, V]: masked cross-entropy
// with its gradient fused in (the logits chunk can be overwritten by dlogits, so
// the chunked linear + CE of src/cuda/loss.rs never holds [T, V] at once), and
// the selected-token log-probability (GRPO's ratio) with its backward. One block
// per row. CPU twin: src/cpu/loss.rs. `dlogits` may alias `logits`: every
// element is read by the thread that later writes it, after the reductions.
#include "common.cuh"

// hot: cross_entropy_forward_backward token_logprobs_forward token_logprobs_backward

#define IGNORE_INDEX (-100)

// max and log-sum-exp of s * row.
static __device__ float row_lse(const bf16 *row, int v, float s, float *scratch) {
  float m = -INFINITY;
  for (int c = threadIdx.x; c < v; c += blockDim.x) m = fmaxf(m, bf(row[c]) * s);
  m = block_max(m, scratch);
  float z = 0.0f;
  for (int c = threadIdx.x; c < v; c += blockDim.x) z += __expf(bf(row[c]) * s - m);
  return m + __logf(block_sum(z, scratch));
}

// loss[r] = lse - logit[label] and lse[r] (both 0 for ignored rows); when
// dlogits != NULL also dlogits = (softmax - onehot(label)) * grad_scale (zeros on
// ignored rows).
extern "C" __global__ void cross_entropy_forward_backward(const bf16 *logits, const int32_t *labels, float *loss,
                                                          float *lse_out, bf16 *dlogits, int rows, int v,
                                                          float grad_scale) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  if (r >= rows) return;
  const int64_t o = (int64_t)r * v;
  const int label = labels[r];
  if (label == IGNORE_INDEX) {
    if (threadIdx.x == 0) {
      loss[r] = 0.0f;
      lse_out[r] = 0.0f;
    }
    if (dlogits)
      for (int c = threadIdx.x; c < v; c += blockDim.x) dlogits[o + c] = to_bf16(0.0f);
    return;
  }
  const float target = bf(logits[o + label]);  // read before any write below
  const float lse = row_lse(logits + o, v, 1.0f, scratch);
  if (threadIdx.x == 0) {
    loss[r] = lse - target;
    lse_out[r] = lse;
  }
  if (dlogits)
    for (int c = threadIdx.x; c < v; c += blockDim.x) {
      const float p = __expf(bf(logits[o + c]) - lse);
      dlogits[o + c] = to_bf16((p - (c == label ? 1.0f : 0.0f)) * grad_scale);
    }
}

// logp[r] = s logit[ids[r]] - lse(s row), lse[r] saved for the backward.
extern "C" __global__ void token_logprobs_forward(const bf16 *logits, const int32_t *ids, float *logp, float *lse_out,
                                                  int rows, int v, float s) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  if (r >= rows) return;
  const int64_t o = (int64_t)r * v;
  const float lse = row_lse(logits + o, v, s, scratch);
  if (threadIdx.x == 0) {
    logp[r] = bf(logits[o + ids[r]]) * s - lse;
    lse_out[r] = lse;
  }
}

// dlogits = s dlogp (onehot(ids) - softmax(s row)).
extern "C" __global__ void token_logprobs_backward(const bf16 *logits, const int32_t *ids, const float *lse,
                                                   const float *dlogp, bf16 *dlogits, int rows, int v, float s) {
  const int r = blockIdx.x;
  if (r >= rows) return;
  const int64_t o = (int64_t)r * v;
  const float g = dlogp[r] * s, l = lse[r];
  const int id = ids[r];
  for (int c = threadIdx.x; c < v; c += blockDim.x) {
    const float p = __expf(bf(logits[o + c]) * s - l);
    dlogits[o + c] = to_bf16(g * ((c == id ? 1.0f : 0.0f) - p));
  }
}

// Entropy of softmax(s * row) per row: H = log z - sum(e * d) / z with
// d = s * x - max and e = exp(d). A GRPO diagnostic, computed where the
// logits are, so they never travel to the host for it.
extern "C" __global__ void row_entropy(const bf16 *logits, float *entropy, int rows, int v, float s) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  if (r >= rows) return;
  const bf16 *row = logits + (int64_t)r * v;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < v; c += blockDim.x) m = fmaxf(m, bf(row[c]) * s);
  m = block_max(m, scratch);
  float z = 0.0f, ed = 0.0f;
  for (int c = threadIdx.x; c < v; c += blockDim.x) {
    const float d = bf(row[c]) * s - m;
    const float e = __expf(d);
    z += e;
    ed += e * d;
  }
  z = block_sum(z, scratch);
  ed = block_sum(ed, scratch);
  if (threadIdx.x == 0) entropy[r] = __logf(z) - ed / z;
}

// out[0] = the sum of x[0..n) in f64, in a fixed order (one block): a loss sum
// that goes to the host as one scalar instead of one f32 per row.
extern "C" __global__ void sum_f32_to_f64(const float *x, int n, double *out) {
  const double sum = block_sum_f64_fixed(x, n);
  if (threadIdx.x == 0) out[0] = sum;
}

// GRPO's per-token objective over a micro-batch's n response tokens, in f64 as
// src/cpu/loss.rs `policy_token_loss` (its twin): ratio rho = exp(logp - old),
// -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), plus beta k3 with
// k3 = exp(ref - logp) - (ref - logp) - 1; dual-clip caps a negative
// advantage's loss at clip_ratio_c |A| and k3 is clamped to kl_clamp (0: off,
// each stopping the gradient). `tokens` packs four rows of n floats:
// old log-probs, reference log-probs, advantages, aggregation denominators.
// Writes dlogp[t] = dloss_t / den_t and, for the host, four sums: the loss
// share, the k3 sum, the clipped tokens, the entropy sum (entropy may be null
// with n_entropy = 0). One block; the sums come out in a fixed order.
extern "C" __global__ void grpo_token_loss(const float *logp, const float *tokens, const float *entropy,
                                           int n_entropy, int n, float eps_low, float eps_high, float beta,
                                           float clip_ratio_c, float kl_clamp, float *dlogp, double *sums) {
  const float *old = tokens, *ref = tokens + n, *adv = tokens + 2 * n, *den = tokens + 3 * n;
  const double lo = 1.0 - (double)eps_low, hi = 1.0 + (double)eps_high;
  double loss = 0.0, kl = 0.0, clipped = 0.0, ent = 0.0;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    const double lp = (double)logp[t], a = (double)adv[t], w = 1.0 / (double)den[t];
    const double ratio = exp(lp - (double)old[t]);
    const double unclipped = ratio * a, clip_v = fmin(fmax(ratio, lo), hi) * a;
    double l, d;
    if (clip_v < unclipped) {  // the clipped branch wins and stops the gradient
      l = -clip_v;
      d = 0.0;
      clipped += 1.0;
    } else {
      l = -unclipped;
      d = -a * ratio;
    }
    // Dual-clip: a negative advantage's loss is capped at c |A|.
    if (clip_ratio_c != 0.0f && a < 0.0 && l > -a * (double)clip_ratio_c) {
      l = -a * (double)clip_ratio_c;
      d = 0.0;
    }
    if (beta != 0.0f) {
      const double delta = (double)ref[t] - lp, e = exp(delta);
      double k3 = e - delta - 1.0, dk3 = 1.0 - e;
      if (kl_clamp != 0.0f && k3 > (double)kl_clamp) {  // low_var_kl's clamp
        k3 = (double)kl_clamp;
        dk3 = 0.0;
      }
      l += (double)beta * k3;
      d += (double)beta * dk3;
      kl += k3;
    }
    loss += w * l;
    dlogp[t] = (float)(w * d);
  }
  for (int t = threadIdx.x; t < n_entropy; t += blockDim.x) ent += (double)entropy[t];
  loss = block_reduce_f64_fixed(loss);
  kl = block_reduce_f64_fixed(kl);
  clipped = block_reduce_f64_fixed(clipped);
  ent = block_reduce_f64_fixed(ent);
  if (threadIdx.x == 0) {
    sums[0] = loss;
    sums[1] = kl;
    sums[2] = clipped;
    sums[3] = ent;
  }
}
