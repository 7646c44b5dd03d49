// An emulated CUDA driver: the part of libcuda's API that cudarc and src/cuda/
// call, implemented on the CPU, with the kernels of cuda/*.cu run by the warp
// emulator (host_emulator.cpp). build.rs links it as a shared library whose
// soname is libcuda.so, so the unchanged Rust device layer (context, allocator,
// copies, module, launches) runs against it: tests/cuda_model.rs and
// tests/cuda_parity.rs execute on a machine without a GPU when
// ACTIAL_EMULATED_DRIVER=1 (src/cuda/emulated.rs loads it).
//
// Device memory is host memory: a CUdeviceptr is a host address, which is what
// the emulated kernels dereference. Every stream is synchronous (work runs when
// it is queued), so the one-stream ordering the device layer relies on holds
// trivially; what this cannot show is a missing synchronisation.
//
// What it checks beyond the kernels' own arithmetic, as a real driver would:
// copies and memsets must lie inside one live allocation, frees must name one,
// allocations fail with CUDA_ERROR_OUT_OF_MEMORY past the emulated capacity,
// memory pools keep their own statistics (cuMemPoolCreate; a destroyed pool
// lives on until its last allocation is freed, as the driver documents),
// cuMemAllocAsync(0) is refused (as some drivers do), the module must be a
// fatbin, kernels are found by name, launches need 1..1024 threads in x only.
//
// Signatures come from the toolkit's cuda.h, so they cannot drift from the
// real API.
#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <map>
#include <mutex>
#include <set>

extern "C" const void *actial_emu_find(const char *name);
extern "C" unsigned actial_emu_max_threads(const void *kernel);
extern "C" void actial_emu_run(const void *kernel, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
                               void **params);

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr const char *kDeviceName = "actial emulated device (CPU warp emulator, not a GPU)";
constexpr uint32_t kFatbinMagic = 0xBA55ED50u;  // the first word of an nvcc -fatbin image
constexpr size_t kAlignment = 256;              // cudaMalloc's guarantee

std::atomic<bool> initialized{false};

// Opaque handles: addresses of these objects.
struct Context {
} primary_context;
struct Module {
} the_module;
thread_local CUcontext current_context = nullptr;

// A memory pool: the statistics cuMemPoolGetAttribute reports. The device's
// default pool always exists; cuMemPoolCreate makes more (src/cuda/device.rs
// gives every opened device its own, so one test's figures are its own).
struct Pool {
  uint64_t used = 0, used_high = 0, reserved = 0, reserved_high = 0;
  uint64_t release_threshold = 0;  // 0: freed memory goes back to the "OS" at once
  size_t live = 0;                 // allocations not yet freed
  bool destroyed = false;          // destroyed with allocations outstanding
};

struct Allocation {
  size_t bytes;
  Pool *pool;
};

// Live allocations by address, the pools, and the device-wide total that the
// emulated capacity bounds.
struct Memory {
  std::mutex mu;
  std::map<uintptr_t, Allocation> live;  // address -> requested bytes and pool
  std::set<Pool *> pools;                // handles that may be used
  Pool default_pool;
  uint64_t capacity = 0;  // emulated device memory
  uint64_t used = 0;      // over all pools
} memory;

// The emulated capacity, read once (caller holds memory.mu).
// ACTIAL_EMULATED_DEVICE_MEMORY: bytes of device memory to emulate (default 8 GiB).
uint64_t capacity() {
  if (memory.capacity == 0) {
    const char *v = std::getenv("ACTIAL_EMULATED_DEVICE_MEMORY");
    memory.capacity = v && *v ? std::strtoull(v, nullptr, 10) : 8ull << 30;
  }
  return memory.capacity;
}

// The pool behind a handle, or null for an unknown or destroyed one (caller
// holds memory.mu).
Pool *pool_of(CUmemoryPool handle) {
  Pool *p = (Pool *)handle;
  if (p == &memory.default_pool) return p;
  return memory.pools.count(p) ? p : nullptr;
}

// Whether [p, p + n) lies inside one live allocation (caller holds memory.mu).
bool inside_live(uintptr_t p, size_t n) {
  auto it = memory.live.upper_bound(p);
  if (it == memory.live.begin()) return false;
  --it;
  return p >= it->first && p + n <= it->first + it->second.bytes && p + n >= p;
}

CUresult check_device_range(CUdeviceptr p, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  std::lock_guard<std::mutex> lock(memory.mu);
  return inside_live((uintptr_t)p, n) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult allocate(CUdeviceptr *out, size_t bytes, CUmemoryPool handle) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!out || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *pool = handle ? pool_of(handle) : &memory.default_pool;
  if (!pool) return CUDA_ERROR_INVALID_HANDLE;
  if (bytes > capacity() - memory.used) return CUDA_ERROR_OUT_OF_MEMORY;
  // Exactly `bytes`, 256-aligned: under AddressSanitizer a kernel that reads
  // or writes one element past a buffer fails, even inside the padding a GPU
  // allocation would have.
  void *p = nullptr;
  if (posix_memalign(&p, kAlignment, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  // Fresh device memory is not zero on a GPU; a recognisable pattern (bf16 and
  // f32 NaN) makes a read of unset memory show up in the results.
  std::memset(p, 0xFF, bytes);
  memory.live[(uintptr_t)p] = Allocation{bytes, pool};
  memory.used += bytes;
  pool->live += 1;
  pool->used += bytes;
  pool->used_high = std::max(pool->used_high, pool->used);
  pool->reserved = std::max(pool->reserved, pool->used);
  pool->reserved_high = std::max(pool->reserved_high, pool->reserved);
  *out = (CUdeviceptr)(uintptr_t)p;
  return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
  std::lock_guard<std::mutex> lock(memory.mu);
  const auto it = memory.live.find((uintptr_t)p);
  if (it == memory.live.end()) return CUDA_ERROR_INVALID_VALUE;
  Pool *pool = it->second.pool;
  memory.used -= it->second.bytes;
  pool->used -= it->second.bytes;
  pool->live -= 1;
  std::free((void *)it->first);
  memory.live.erase(it);
  // A pool keeps freed blocks reserved up to its release threshold.
  pool->reserved = std::max(pool->used, std::min(pool->reserved, pool->release_threshold));
  // A pool destroyed while it still had allocations goes with the last one,
  // as cuMemPoolDestroy documents.
  if (pool->destroyed && pool->live == 0) delete pool;
  return CUDA_SUCCESS;
}

struct ErrorText {
  CUresult code;
  const char *name, *text;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported (by the emulated driver)"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
};

}  // namespace

// ---- initialisation, devices, contexts -------------------------------------------
EXPORT CUresult cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  initialized = true;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *version) {
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  *version = 13000;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *count) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  *count = 1;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(name, (size_t)len, "%s", kDeviceName);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem(size_t *bytes, CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard<std::mutex> lock(memory.mu);
  *bytes = capacity();
  return CUDA_SUCCESS;
}

// An H100's figures where the device layer or cudarc ask; anything else is
// refused, so a new query shows up as an error rather than a made-up value.
EXPORT CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attr, CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  switch (attr) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 132; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = 48 << 10; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *value = 1; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *value = 1; break;
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice device) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  *ctx = (CUcontext)&primary_context;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice device) {
  return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  if (ctx && ctx != (CUcontext)&primary_context) return CUDA_ERROR_INVALID_CONTEXT;
  current_context = ctx;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx) {
  *ctx = current_context;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
  if (!current_context) return CUDA_ERROR_INVALID_CONTEXT;
  *device = 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void) { return current_context ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT; }

// ---- streams and events: all work runs when it is queued ------------------------------
EXPORT CUresult cuStreamCreate(CUstream *stream, unsigned int) {
  *stream = (CUstream) new char;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamDestroy(CUstream stream) {
  delete (char *)stream;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
EXPORT CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return CUDA_SUCCESS; }
// Streams are synchronous, so an event completes when it is recorded and its
// timestamp is the host clock at that moment: elapsed times are those of the
// emulator (the benches run, their figures mean nothing for a GPU).
struct EmuEvent {
  unsigned flags = 0;
  bool recorded = false;
  std::chrono::steady_clock::time_point at;
};
EXPORT CUresult cuEventCreate(CUevent *event, unsigned int flags) {
  if (!event) return CUDA_ERROR_INVALID_VALUE;
  *event = (CUevent) new EmuEvent{flags};
  return CUDA_SUCCESS;
}
EXPORT CUresult cuEventDestroy(CUevent event) {
  if (!event) return CUDA_ERROR_INVALID_HANDLE;
  delete (EmuEvent *)event;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuEventRecord(CUevent event, CUstream) {
  if (!event) return CUDA_ERROR_INVALID_HANDLE;
  auto *e = (EmuEvent *)event;
  e->recorded = true;
  e->at = std::chrono::steady_clock::now();
  return CUDA_SUCCESS;
}
EXPORT CUresult cuEventSynchronize(CUevent event) { return event ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
// As the driver: both events recorded, neither created with DISABLE_TIMING.
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end) {
  if (!ms) return CUDA_ERROR_INVALID_VALUE;
  const auto *a = (const EmuEvent *)start, *b = (const EmuEvent *)end;
  if (!a || !b || !a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
  if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING) return CUDA_ERROR_INVALID_HANDLE;
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return CUDA_SUCCESS;
}

// ---- memory ---------------------------------------------------------------------------
EXPORT CUresult cuMemAlloc(CUdeviceptr *p, size_t bytes) { return allocate(p, bytes, nullptr); }
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, CUstream) { return allocate(p, bytes, nullptr); }
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t bytes, CUmemoryPool pool, CUstream) {
  if (!pool) return CUDA_ERROR_INVALID_VALUE;
  return allocate(p, bytes, pool);
}
EXPORT CUresult cuMemFree(CUdeviceptr p) { return release(p); }
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return release(p); }

EXPORT CUresult cuMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  std::lock_guard<std::mutex> lock(memory.mu);
  *free_bytes = capacity() - memory.used;
  *total_bytes = capacity();
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice device) {
  if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
  *pool = (CUmemoryPool)&memory.default_pool;
  return CUDA_SUCCESS;
}

// Device-memory pools on device 0 only (pinned, no IPC handles), as src/cuda/
// asks for; other properties are refused rather than ignored.
EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!pool || !props) return CUDA_ERROR_INVALID_VALUE;
  if (props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED || props->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
    return CUDA_ERROR_INVALID_VALUE;
  if (props->location.id != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (props->handleTypes != CU_MEM_HANDLE_TYPE_NONE || props->maxSize != 0) return CUDA_ERROR_NOT_SUPPORTED;
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *p = new Pool;
  memory.pools.insert(p);
  *pool = (CUmemoryPool)p;
  return CUDA_SUCCESS;
}

// The handle is gone at once; allocations still outstanding stay valid and the
// pool's memory is released with the last of them.
EXPORT CUresult cuMemPoolDestroy(CUmemoryPool handle) {
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *pool = (Pool *)handle;
  if (pool == &memory.default_pool) return CUDA_ERROR_INVALID_VALUE;
  if (!memory.pools.erase(pool)) return CUDA_ERROR_INVALID_HANDLE;
  if (pool->live == 0)
    delete pool;
  else
    pool->destroyed = true;
  return CUDA_SUCCESS;
}

// Returns cached (freed) blocks to the "OS" down to `keep` bytes reserved.
EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool handle, size_t keep) {
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *pool = pool_of(handle);
  if (!pool) return CUDA_ERROR_INVALID_HANDLE;
  pool->reserved = std::max(pool->used, std::min<uint64_t>(pool->reserved, keep));
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool handle, CUmemPool_attribute attr, void *value) {
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *pool = pool_of(handle);
  if (!pool) return CUDA_ERROR_INVALID_HANDLE;
  const uint64_t v = *static_cast<uint64_t *>(value);
  switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: pool->release_threshold = v; return CUDA_SUCCESS;
    // The high-water marks may only be reset to zero (then they restart from now).
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
      if (v != 0) return CUDA_ERROR_INVALID_VALUE;
      pool->used_high = pool->used;
      return CUDA_SUCCESS;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
      if (v != 0) return CUDA_ERROR_INVALID_VALUE;
      pool->reserved_high = pool->reserved;
      return CUDA_SUCCESS;
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool handle, CUmemPool_attribute attr, void *value) {
  std::lock_guard<std::mutex> lock(memory.mu);
  Pool *pool = pool_of(handle);
  if (!pool) return CUDA_ERROR_INVALID_HANDLE;
  uint64_t *out = static_cast<uint64_t *>(value);
  switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *out = pool->release_threshold; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *out = pool->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *out = pool->used_high; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *out = pool->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *out = pool->reserved_high; break;
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n) {
  if (CUresult r = check_device_range(dst, n)) return r;
  std::memcpy((void *)(uintptr_t)dst, src, n);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream) {
  return cuMemcpyHtoD(dst, src, n);
}
EXPORT CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n) {
  if (CUresult r = check_device_range(src, n)) return r;
  std::memcpy(dst, (const void *)(uintptr_t)src, n);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream) { return cuMemcpyDtoH(dst, src, n); }
EXPORT CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (CUresult r = check_device_range(dst, n)) return r;
  if (CUresult r = check_device_range(src, n)) return r;
  std::memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
  return cuMemcpyDtoD(dst, src, n);
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream) {
  if (CUresult r = check_device_range(dst, n)) return r;
  std::memset((void *)(uintptr_t)dst, value, n);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) { return cuMemsetD8Async(dst, value, n, 0); }
EXPORT CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int value, size_t n, CUstream) {
  if (CUresult r = check_device_range(dst, n * 4)) return r;
  std::fill_n((uint32_t *)(uintptr_t)dst, n, value);
  return CUDA_SUCCESS;
}

// ---- modules and launches -------------------------------------------------------------
EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!current_context) return CUDA_ERROR_INVALID_CONTEXT;
  uint32_t magic = 0;
  std::memcpy(&magic, image, 4);
  // The image is not executed: the kernels it holds were compiled for the CPU
  // from the same sources. Checking it is a fatbin catches a wrong embed.
  if (magic != kFatbinMagic) return CUDA_ERROR_INVALID_IMAGE;
  *module = (CUmodule)&the_module;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleUnload(CUmodule module) {
  return module == (CUmodule)&the_module ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name) {
  if (module != (CUmodule)&the_module) return CUDA_ERROR_INVALID_HANDLE;
  const void *kernel = actial_emu_find(name);
  if (!kernel) return CUDA_ERROR_NOT_FOUND;
  *function = (CUfunction)kernel;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz, unsigned int shared_bytes, CUstream, void **params,
                               void **extra) {
  if (!current_context) return CUDA_ERROR_INVALID_CONTEXT;
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  // The hardware's grid limits: 2^31 - 1 blocks in x, 65535 in y and z.
  if (gx == 0 || gy == 0 || gz == 0 || gx > 0x7fffffffu || gy > 65535 || gz > 65535) return CUDA_ERROR_INVALID_VALUE;
  if (bx == 0 || bx > 1024) return CUDA_ERROR_INVALID_VALUE;
  // The emulator runs 1-D blocks with static shared memory only, which is all
  // cuda/*.cu uses; anything else is refused rather than run wrongly.
  if (by != 1 || bz != 1 || shared_bytes != 0 || extra) return CUDA_ERROR_NOT_SUPPORTED;
  // As on a GPU: a block bigger than the kernel's __launch_bounds__, or than
  // its registers per thread leave room for, does not launch.
  if (bx > actial_emu_max_threads((const void *)f)) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
  actial_emu_run((const void *)f, gx, gy, gz, bx, params);
  return CUDA_SUCCESS;
}

// ---- errors -----------------------------------------------------------------------------
EXPORT CUresult cuGetErrorName(CUresult code, const char **name) {
  for (const auto &e : kErrors)
    if (e.code == code) {
      *name = e.name;
      return CUDA_SUCCESS;
    }
  *name = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(CUresult code, const char **text) {
  for (const auto &e : kErrors)
    if (e.code == code) {
      *text = e.text;
      return CUDA_SUCCESS;
    }
  *text = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

// For the emulated cuBLASLt: whether [p, p + bytes) is inside one live allocation.
EXPORT int actial_emulated_driver_owns(uint64_t p, size_t bytes) {
  return check_device_range((CUdeviceptr)p, bytes) == CUDA_SUCCESS;
}
