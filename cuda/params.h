/* Kernel parameter structs, shared by the .cu files and Rust (build.rs runs
 * bindgen on this header; src/cuda/ uses the generated definitions). One
 * definition of each struct: change it here and both sides follow.
 *
 * Device pointers are plain C pointers; bf16 buffers are `uint16_t *` here (C has
 * no bf16 type) and `__nv_bfloat16 *` inside the kernels. */
#ifndef ACTIAL_PARAMS_H
#define ACTIAL_PARAMS_H

#include <stdint.h>

/* Elements one block of a multi-tensor launch (AdamW, sum of squares) handles. */
#define ACTIAL_MULTI_TENSOR_CHUNK 4096
/* Threads per block of the multi-tensor kernels. */
#define ACTIAL_MULTI_TENSOR_THREADS 256

/* One tensor of a multi-tensor launch. `first_block` is the prefix sum of
 * ceil(numel / CHUNK) over the tensors before it, so a block finds its tensor by
 * binary search without a per-block table. */
typedef struct {
  float *param;         /* f32 master weights, updated in place */
  const float *grad;    /* f32 gradient */
  float *exp_avg;       /* first moment */
  float *exp_avg_sq;    /* second moment */
  uint16_t *param_bf16; /* bf16 copy written after the update; NULL: none */
  int64_t numel;
  int64_t first_block;
} ActialTensorSlot;

/* One AdamW step (torch.optim.AdamW, decoupled decay, non-amsgrad). The host
 * folds the step count into step_size = lr / (1 - beta1^t) and
 * bc2_sqrt = sqrt(1 - beta2^t). */
typedef struct {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  float step_size;
  float bc2_sqrt;
  int32_t num_tensors;
  /* Device scalar multiplying every gradient (the clip coefficient written by
   * clip_coefficient); NULL: 1. Read on the device, so clipping needs no host
   * round trip. */
  const float *grad_scale;
  /* Set to 1 by any thread that writes a non-finite weight or second moment;
   * NULL: not checked. The host reads it after the step (4 bytes). */
  int32_t *nonfinite;
} ActialAdamWParams;

/* Most banned ids one sampling launch takes (they sit in shared memory). */
#define ACTIAL_MAX_BANNED 64

/* Temperature / top-k / top-p sampling of `samples_per_row` tokens per logits
 * row. Sample j of row r uses Philox stream `streams[r] + j` under key
 * (seed_lo, seed_hi), as src/cpu/sampling.rs does. `n_banned` ids (the vision
 * placeholders of a rollout) are never drawn; the log-prob stays the full
 * row's. */
typedef struct {
  float temperature; /* <= 0: greedy (first argmax), log-prob at temperature 1 */
  int32_t top_k;     /* 0: off */
  float top_p;       /* >= 1: off */
  int32_t vocab;
  int32_t rows;
  int32_t samples_per_row;
  uint32_t seed_lo;
  uint32_t seed_hi;
  int32_t n_banned; /* 0..=ACTIAL_MAX_BANNED */
} ActialSamplingParams;

/* Variable-length attention over packed segments (cu_seqlens), the layout of
 * src/cpu/attention.rs: q [T, Hq, D], k and v [T, Hkv, D], out [T, Hq, D],
 * lse [T, Hq]. The head dim D is a template parameter of each kernel. */
typedef struct {
  int32_t q_heads;
  int32_t kv_heads;
  int32_t causal;
  float scale;
} ActialAttentionParams;

/* A paged KV cache as the cascade decode kernel reads it: pool rows per block,
 * and the row widths (blocks per sequence) of the prefix and suffix tables. */
typedef struct {
  int32_t block_size;
  int32_t prefix_table_width;
  int32_t suffix_table_width;
} ActialPagedKv;

/* Most dims a strided copy handles (tensors here have rank <= 4). */
#define ACTIAL_MAX_COPY_RANK 8

/* A strided element copy, the one kernel behind permute, narrow on an inner dim
 * and each part of a cat: output element with multi-index i (row-major over
 * `dims`) moves from src[sum i_d * src_strides[d]] to
 * dst[sum i_d * dst_strides[d]]. Strides count elements. */
typedef struct {
  int32_t rank;
  int64_t numel;
  int64_t dims[ACTIAL_MAX_COPY_RANK];
  int64_t src_strides[ACTIAL_MAX_COPY_RANK];
  int64_t dst_strides[ACTIAL_MAX_COPY_RANK];
} ActialStridedCopy;

#endif
