// An emulated cuBLASLt: the calls src/cuda/gemm.rs makes (handle, matrix
// layouts, matmul descriptor, preference, heuristic, matmul), computed on the
// CPU with the documented semantics, so the row-major -> column-major
// translation of gemm.rs is checked against the API's definition, not only
// against itself. build.rs links it with soname libcublasLt.so next to the
// emulated driver (emulated_driver.cpp), whose host addresses it reads.
//
// Semantics (cuBLASLt documentation, "cublasLtMatmul"): column-major layouts
// (rows, cols, ld), D = alpha · op(A) · op(B) + beta · C, then the BIAS
// epilogue adds bias[i] to row i of D; products accumulate in f32 and D is
// rounded once to its type (bf16 round-to-nearest-even). With beta = 0 C is
// not read. Shapes that do not chain, ld < rows, an unknown attribute, type or
// epilogue are refused with CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED, and
// every operand must lie inside one live allocation of the emulated driver.
//
// No cublasLt.h ships with the compiler package, so the few types are written
// out here from the cuBLASLt API reference (values as in cudarc's bindings).
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

using cublasStatus_t = int;
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
constexpr cublasStatus_t CUBLAS_STATUS_NOT_INITIALIZED = 1;
constexpr cublasStatus_t CUBLAS_STATUS_INVALID_VALUE = 7;
constexpr cublasStatus_t CUBLAS_STATUS_EXECUTION_FAILED = 13;
constexpr cublasStatus_t CUBLAS_STATUS_NOT_SUPPORTED = 15;

constexpr int CUDA_R_32F = 0, CUDA_R_16BF = 14;
constexpr int CUBLAS_COMPUTE_32F = 68;
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
constexpr int CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4;
constexpr int CUBLASLT_ORDER_COL = 0;

// cublasLtMatrixLayoutAttribute_t
enum { LAYOUT_TYPE = 0, LAYOUT_ORDER = 1, LAYOUT_ROWS = 2, LAYOUT_COLS = 3, LAYOUT_LD = 4, LAYOUT_BATCH_COUNT = 5,
       LAYOUT_STRIDED_BATCH_OFFSET = 6 };
// cublasLtMatmulDescAttributes_t
enum { DESC_COMPUTE_TYPE = 0, DESC_SCALE_TYPE = 1, DESC_POINTER_MODE = 2, DESC_TRANSA = 3, DESC_TRANSB = 4,
       DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8, DESC_BIAS_DATA_TYPE = 26 };
// cublasLtMatmulPreferenceAttributes_t
enum { PREF_SEARCH_MODE = 0, PREF_MAX_WORKSPACE_BYTES = 1 };

struct Handle {
  int magic = 0x4c74;
};
struct Layout {
  int type;
  uint64_t rows, cols;
  int64_t ld;
  int order = CUBLASLT_ORDER_COL;
  int batch = 1;
};
struct Desc {
  int compute, scale;
  int transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  int epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void *bias = nullptr;
  int bias_type = -1;  // -1: the type of D
  int pointer_mode = 0;
};
struct Preference {
  uint64_t workspace = 0;
};
struct Algo {
  uint64_t data[8];
};
struct HeuristicResult {
  Algo algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

namespace {

float bf16_to_f32(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

size_t element_bytes(int type) { return type == CUDA_R_16BF ? 2 : 4; }

float load(const void *base, int type, size_t i) {
  if (type == CUDA_R_16BF) return bf16_to_f32(static_cast<const uint16_t *>(base)[i]);
  return static_cast<const float *>(base)[i];
}

void store(void *base, int type, size_t i, float v) {
  if (type == CUDA_R_16BF)
    static_cast<uint16_t *>(base)[i] = f32_to_bf16(v);
  else
    static_cast<float *>(base)[i] = v;
}

// Bytes a column-major matrix spans: (cols - 1) · ld + rows elements.
size_t span_bytes(const Layout &l) {
  if (l.rows == 0 || l.cols == 0) return 0;
  return ((l.cols - 1) * (uint64_t)l.ld + l.rows) * element_bytes(l.type);
}

// The emulated driver's allocation check (same process, loaded first).
bool device_owns(const void *p, size_t bytes) {
  using Owns = int (*)(uint64_t, size_t);
  static Owns owns = [] {
    void *driver = dlopen("libcuda.so", RTLD_NOLOAD | RTLD_LAZY);
    return driver ? (Owns)dlsym(driver, "actial_emulated_driver_owns") : nullptr;
  }();
  return owns ? owns((uint64_t)(uintptr_t)p, bytes) != 0 : true;
}

// Refuses a problem cuBLASLt would refuse (or that this emulation does not
// cover); `m, n, k` are the problem's sizes on success.
cublasStatus_t validate(const Desc &d, const Layout &a, const Layout &b, const Layout &c, const Layout &out,
                        uint64_t *m, uint64_t *n, uint64_t *k, const char **why) {
  *why = nullptr;
  auto refuse = [&](cublasStatus_t s, const char *w) {
    *why = w;
    return s;
  };
  if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "compute type must be CUBLAS_COMPUTE_32F with f32 scale");
  if (a.type != CUDA_R_16BF || b.type != CUDA_R_16BF)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "A and B must be bf16");
  if (c.type != out.type || c.rows != out.rows || c.cols != out.cols)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "C and D layouts differ");
  for (const Layout *l : {&a, &b, &c, &out}) {
    if (l->order != CUBLASLT_ORDER_COL || l->batch != 1)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "only column-major, unbatched layouts are emulated");
    if (l->ld < (int64_t)l->rows || l->ld < 1) return refuse(CUBLAS_STATUS_INVALID_VALUE, "ld < rows");
  }
  *m = out.rows;
  *n = out.cols;
  const uint64_t a_rows = d.transa == CUBLAS_OP_N ? a.rows : a.cols;
  *k = d.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t b_rows = d.transb == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t b_cols = d.transb == CUBLAS_OP_N ? b.cols : b.rows;
  if (a_rows != *m || b_rows != *k || b_cols != *n)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "op(A) [m, k] · op(B) [k, n] does not give D [m, n]");
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && !d.bias)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "BIAS epilogue without a bias pointer");
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t report(cublasStatus_t s, const char *what, const char *why) {
  if (s != CUBLAS_STATUS_SUCCESS && why) std::fprintf(stderr, "emulated cuBLASLt: %s refused: %s\n", what, why);
  return s;
}

}  // namespace

EXPORT cublasStatus_t cublasLtCreate(Handle **handle) {
  *handle = new Handle;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtDestroy(Handle *handle) {
  if (!handle || handle->magic != 0x4c74) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatrixLayoutCreate(Layout **layout, int type, uint64_t rows, uint64_t cols,
                                                 int64_t ld) {
  if (type != CUDA_R_16BF && type != CUDA_R_32F) return report(CUBLAS_STATUS_NOT_SUPPORTED, "layout", "data type");
  *layout = new Layout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutDestroy(Layout *layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutSetAttribute(Layout *l, int attr, const void *buf, size_t size) {
  // Each attribute is a value of one documented size (int32 or 64-bit).
  auto copy = [&](void *field, size_t bytes) {
    if (size != bytes) return report(CUBLAS_STATUS_INVALID_VALUE, "layout attribute", "wrong value size");
    std::memcpy(field, buf, bytes);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case LAYOUT_TYPE: return copy(&l->type, 4);
    case LAYOUT_ORDER: return copy(&l->order, 4);
    case LAYOUT_BATCH_COUNT: return copy(&l->batch, 4);
    case LAYOUT_ROWS: return copy(&l->rows, 8);
    case LAYOUT_COLS: return copy(&l->cols, 8);
    case LAYOUT_LD: return copy(&l->ld, 8);
    default: return report(CUBLAS_STATUS_NOT_SUPPORTED, "layout attribute", "not emulated");
  }
}

EXPORT cublasStatus_t cublasLtMatmulDescCreate(Desc **desc, int compute, int scale) {
  *desc = new Desc{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulDescDestroy(Desc *desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *buf, size_t size) {
  auto int32 = [&](int *field) {
    if (size != 4) return report(CUBLAS_STATUS_INVALID_VALUE, "matmul attribute", "expected a 4-byte value");
    std::memcpy(field, buf, 4);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case DESC_TRANSA: return int32(&d->transa);
    case DESC_TRANSB: return int32(&d->transb);
    case DESC_POINTER_MODE: return int32(&d->pointer_mode);
    case DESC_BIAS_DATA_TYPE: return int32(&d->bias_type);
    case DESC_EPILOGUE: {
      cublasStatus_t s = int32(&d->epilogue);
      if (s == CUBLAS_STATUS_SUCCESS && d->epilogue != CUBLASLT_EPILOGUE_DEFAULT &&
          d->epilogue != CUBLASLT_EPILOGUE_BIAS)
        return report(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue", "only DEFAULT and BIAS are emulated");
      return s;
    }
    case DESC_BIAS_POINTER:
      if (size != sizeof(void *)) return report(CUBLAS_STATUS_INVALID_VALUE, "bias pointer", "size");
      std::memcpy(&d->bias, buf, sizeof(void *));
      return CUBLAS_STATUS_SUCCESS;
    default: return report(CUBLAS_STATUS_NOT_SUPPORTED, "matmul attribute", "not emulated");
  }
}

EXPORT cublasStatus_t cublasLtMatmulPreferenceCreate(Preference **pref) {
  *pref = new Preference;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulPreferenceDestroy(Preference *pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulPreferenceSetAttribute(Preference *p, int attr, const void *buf, size_t size) {
  if (attr == PREF_MAX_WORKSPACE_BYTES && size == 8) {
    std::memcpy(&p->workspace, buf, 8);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr == PREF_SEARCH_MODE && size == 4) return CUBLAS_STATUS_SUCCESS;
  return report(CUBLAS_STATUS_INVALID_VALUE, "preference attribute", "not emulated or wrong size");
}

EXPORT cublasStatus_t cublasLtMatmulAlgoGetHeuristic(Handle *, Desc *d, Layout *a, Layout *b, Layout *c, Layout *out,
                                                     Preference *, int requested, HeuristicResult *results,
                                                     int *returned) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  uint64_t m, n, k;
  const char *why;
  const cublasStatus_t s = validate(*d, *a, *b, *c, *out, &m, &n, &k, &why);
  if (s != CUBLAS_STATUS_SUCCESS) {
    *returned = 0;
    return report(s, "heuristic", why);
  }
  std::memset(&results[0], 0, sizeof(HeuristicResult));
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmul(Handle *handle, Desc *d, const void *alpha_ptr, const void *A, Layout *a,
                                     const void *B, Layout *b, const void *beta_ptr, const void *C, Layout *c,
                                     void *D, Layout *out, const Algo *, void *, size_t, void *) {
  if (!handle || handle->magic != 0x4c74) return CUBLAS_STATUS_NOT_INITIALIZED;
  uint64_t m, n, k;
  const char *why;
  if (cublasStatus_t s = validate(*d, *a, *b, *c, *out, &m, &n, &k, &why)) return report(s, "matmul", why);
  if (d->pointer_mode != 0) return report(CUBLAS_STATUS_NOT_SUPPORTED, "matmul", "device pointer mode");
  const float alpha = *static_cast<const float *>(alpha_ptr), beta = *static_cast<const float *>(beta_ptr);
  const int bias_type = d->bias_type < 0 ? out->type : d->bias_type;
  const bool bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (!device_owns(A, span_bytes(*a)) || !device_owns(B, span_bytes(*b)) || !device_owns(D, span_bytes(*out)) ||
      (beta != 0.0f && !device_owns(C, span_bytes(*c))) ||
      (bias && !device_owns(d->bias, m * element_bytes(bias_type))))
    return report(CUBLAS_STATUS_EXECUTION_FAILED, "matmul", "an operand reaches outside its device allocation");
  // op(A)(i, l) and op(B)(l, j) of the column-major operands.
  auto a_at = [&](uint64_t i, uint64_t l) {
    return d->transa == CUBLAS_OP_N ? load(A, a->type, i + l * a->ld) : load(A, a->type, l + i * a->ld);
  };
  auto b_at = [&](uint64_t l, uint64_t j) {
    return d->transb == CUBLAS_OP_N ? load(B, b->type, l + j * b->ld) : load(B, b->type, j + l * b->ld);
  };
  // Blocked: op(A) rows i0..i0+MB and op(B) columns j0..j0+NB are converted
  // to f32 once per block (contiguous in i, resp. l), then each output is a
  // sum over l in order, as before (the same rounding as the plain loop).
  // Blocks of rows are shared out to threads: CI runs the CUDA path at
  // released widths on this, where the plain loop took minutes per GEMM.
  constexpr uint64_t MB = 64, NB = 64;
  const uint64_t row_blocks = (m + MB - 1) / MB;
  auto work = [&](uint64_t first, uint64_t step) {
    std::vector<float> ablk(MB * k), bblk(NB * k), acc(MB);
    for (uint64_t ib = first; ib < row_blocks; ib += step) {
      const uint64_t i0 = ib * MB, mb = std::min(MB, m - i0);
      for (uint64_t l = 0; l < k; ++l)
        for (uint64_t ii = 0; ii < mb; ++ii) ablk[l * MB + ii] = a_at(i0 + ii, l);
      for (uint64_t j0 = 0; j0 < n; j0 += NB) {
        const uint64_t nb = std::min(NB, n - j0);
        for (uint64_t jj = 0; jj < nb; ++jj)
          for (uint64_t l = 0; l < k; ++l) bblk[jj * k + l] = b_at(l, j0 + jj);
        for (uint64_t jj = 0; jj < nb; ++jj) {
          std::fill(acc.begin(), acc.end(), 0.0f);
          const float *bj = &bblk[jj * k];
          for (uint64_t l = 0; l < k; ++l) {
            const float bl = bj[l];
            const float *al = &ablk[l * MB];
            for (uint64_t ii = 0; ii < MB; ++ii) acc[ii] += al[ii] * bl;
          }
          const uint64_t j = j0 + jj;
          for (uint64_t ii = 0; ii < mb; ++ii) {
            const uint64_t i = i0 + ii;
            float v = alpha * acc[ii];
            if (beta != 0.0f) v += beta * load(C, c->type, i + j * c->ld);
            if (bias) v += load(d->bias, bias_type, i);
            store(D, out->type, i + j * out->ld, v);
          }
        }
      }
    }
  };
  const uint64_t threads = std::min<uint64_t>(std::max(1u, std::thread::hardware_concurrency()), row_blocks);
  if (threads <= 1 || m * n * k < (1u << 20)) {
    work(0, 1);
  } else {
    std::vector<std::thread> pool;
    for (uint64_t t = 0; t < threads; ++t) pool.emplace_back(work, t, threads);
    for (auto &t : pool) t.join();
  }
  return CUBLAS_STATUS_SUCCESS;
}
