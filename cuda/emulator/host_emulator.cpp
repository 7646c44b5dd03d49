// Every kernel of cuda/*.cu, compiled for the CPU against host_emulator.hpp,
// behind one C entry point that launches a kernel by name with a
// cuLaunchKernel-style argument array (src/cuda/emulator.rs builds it with the
// same plans and geometry as the CUDA wrappers).
#define ACTIAL_HOST_EMULATION 1
#include "host_emulator.hpp"

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../attention.cu"
#include "../lora.cu"
#include "../loss.cu"
#include "../optim.cu"
#include "../sampling.cu"
#include "../small_ops.cu"

namespace {

// Kernel statics stand in for shared memory, so launches must not overlap
// (the Rust test harness runs tests on several threads).
std::mutex launch_mutex;

// Runs `kernel()` for every block of `grid` with `threads` threads per block:
// the block's threads run concurrently (barriers and warp operations need
// them all), blocks one after another.
template <class Kernel>
void emu_launch(EmuDim3 grid, int threads, Kernel kernel) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  gridDim = grid;
  blockDim = EmuDim3{(unsigned)threads, 1, 1};
  EmuBlock block(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = EmuDim3{(unsigned)t, 0, 0};
      emu_block = &block;
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            blockIdx = EmuDim3{x, y, z};
            kernel();
            block.bar.arrive_and_wait();  // the block ends for all its threads
          }
    });
  for (auto &th : pool) th.join();
}

// A kernel's argument sizes and a caller that unpacks its arguments from a
// cuLaunchKernel-style array (params[i] points at the value of argument i).
// The sizes let a launch with the wrong argument list fail with a message
// instead of reading garbage, which cuLaunchKernel itself cannot check.
struct Trampoline {
  std::vector<std::size_t> sizes;
  std::function<void(void **)> call;
};

template <class... A, std::size_t... I>
void call_with(void (*f)(A...), void **params, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A> *>(params[I])...);
}

template <class... A>
Trampoline trampoline(void (*f)(A...)) {
  return {{sizeof(A)...}, [f](void **params) { call_with(f, params, std::index_sequence_for<A...>{}); }};
}

// Every extern "C" __global__ kernel of cuda/*.cu, listed by build.rs.
const std::unordered_map<std::string, Trampoline> &kernel_table() {
#define EMU_KERNEL(name) {#name, trampoline(name)},
  static const std::unordered_map<std::string, Trampoline> table = {
#include "emulator_kernels.inc"
  };
#undef EMU_KERNEL
  return table;
}

}  // namespace

// Launches kernel `name` on a (gx, gy, gz) grid of `threads`-thread blocks
// with `count` arguments of `sizes[i]` bytes. Returns 0; -1 if no kernel has
// that name; -2 if the argument count differs (`*expected` = the kernel's);
// -3 - i if argument i has the wrong size (`*expected` = its size).
extern "C" int actial_emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
                                 void **params, const std::size_t *sizes, int count, std::size_t *expected) {
  const auto &table = kernel_table();
  const auto it = table.find(name);
  if (it == table.end()) return -1;
  const Trampoline &run = it->second;
  if ((std::size_t)count != run.sizes.size()) {
    *expected = run.sizes.size();
    return -2;
  }
  for (int i = 0; i < count; ++i)
    if (sizes[i] != run.sizes[i]) {
      *expected = run.sizes[i];
      return -3 - i;
    }
  emu_launch(EmuDim3{gx, gy, gz}, (int)threads, [&] { run.call(params); });
  return 0;
}

// How many kernels the table holds (a test compares it with cuda/*.cu).
extern "C" int actial_emu_kernel_count() { return (int)kernel_table().size(); }
