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
#include <sys/mman.h>
#include <ucontext.h>
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

// ---- fibers ------------------------------------------------------------------------
// Each CUDA thread of a block is a ucontext fiber; the launching thread is the
// scheduler. Fibers run round-robin, each until it waits at a barrier
// (emu_yield) or finishes its last block. A round in which no fiber got past
// a barrier or finished means the block's threads wait at different barriers
// (a __syncthreads in divergent code, say): that is reported, not hung on.

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#endif

constexpr size_t kStackBytes = 256 << 10;  // per fiber; kernels keep register-sized arrays

#if defined(__x86_64__)
// A context is a saved stack pointer: actial_emu_switch pushes the System V
// callee-saved registers, stores rsp in *save, loads `to` and pops them. glibc's
// swapcontext would also save the signal mask, one system call per switch,
// which dominated the emulator's time (a rendezvous is 32 switches).
struct Context {
  void *sp = nullptr;
};
extern "C" void actial_emu_switch(void **save, void *to);
asm(R"(
  .text
  .p2align 4
  .globl actial_emu_switch
  .hidden actial_emu_switch
  .type actial_emu_switch, @function
actial_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size actial_emu_switch, .-actial_emu_switch
)");
void raw_switch(Context *from, Context *to) { actial_emu_switch(&from->sp, to->sp); }
// A fresh stack that "returns" into entry() as if it had been called: six
// zeroed registers, entry's address, and a null return address for entry.
void make_context(Context *c, char *stack, void (*entry)()) {
  auto *top = reinterpret_cast<uintptr_t *>((reinterpret_cast<uintptr_t>(stack) + kStackBytes) & ~uintptr_t{15});
  *--top = 0;  // entry never returns
  *--top = reinterpret_cast<uintptr_t>(entry);
  for (int i = 0; i < 6; ++i) *--top = 0;
  c->sp = top;
}
#else
struct Context {
  ucontext_t uc;
};
void raw_switch(Context *from, Context *to) { swapcontext(&from->uc, &to->uc); }
void make_context(Context *c, char *stack, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = kStackBytes;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}
#endif

struct Fiber {
  Context context;
  char *stack = nullptr;  // kStackBytes above one guard page
  bool finished = false;
};

struct Scheduler {
  Context main;
  std::vector<Fiber> fibers;
  int current = -1;
  std::function<void()> body;  // what each fiber runs: all blocks of the launch
  const void *main_stack = nullptr;  // the launching thread's stack, for ASan
  size_t main_stack_size = 0;
};
Scheduler scheduler;

// Switches from `from` to `to`, whose stack is [to_stack, + to_size); with ASan,
// tells it about the stack change (a finishing fiber's fake stack is dropped).
void switch_context(Context *from, Context *to, const void *to_stack, size_t to_size, bool from_finishes) {
#if defined(__SANITIZE_ADDRESS__)
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(from_finishes ? nullptr : &fake, to_stack, to_size);
  raw_switch(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)to_stack;
  (void)to_size;
  (void)from_finishes;
  raw_switch(from, to);
#endif
}

char *fiber_stack(Fiber &f) {
  if (!f.stack) {
    const size_t page = 4096;
    void *m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "emulator: could not map a fiber stack\n");
      std::abort();
    }
    mprotect(m, page, PROT_NONE);  // an overflow faults instead of corrupting a neighbour
    f.stack = static_cast<char *>(m) + page;
  }
  return f.stack;
}

void fiber_main() {
  Scheduler &s = scheduler;
#if defined(__SANITIZE_ADDRESS__)
  // The first entry into a fiber learns the launching thread's stack bounds.
  __sanitizer_finish_switch_fiber(nullptr, &s.main_stack, &s.main_stack_size);
#endif
  s.body();
  Fiber &me = s.fibers[s.current];
  me.finished = true;
  ++emu_progress;
  switch_context(&me.context, &s.main, s.main_stack, s.main_stack_size, true);  // never resumed
  std::abort();
}

// Runs `threads` fibers of `body` to completion on this OS thread.
void run_fibers(int threads, std::function<void()> body) {
  Scheduler &s = scheduler;
  if ((int)s.fibers.size() < threads) s.fibers.resize(threads);
  s.body = std::move(body);
  for (int t = 0; t < threads; ++t) {
    Fiber &f = s.fibers[t];
    f.finished = false;
    make_context(&f.context, fiber_stack(f), fiber_main);
  }
  int remaining = threads;
  while (remaining > 0) {
    const unsigned long before = emu_progress;
    for (int t = 0; t < threads; ++t) {
      Fiber &f = s.fibers[t];
      if (f.finished) continue;
      s.current = t;
      threadIdx = EmuDim3{(unsigned)t, 0, 0};
      switch_context(&s.main, &f.context, f.stack, kStackBytes, false);
      if (f.finished) --remaining;
    }
    if (remaining > 0 && emu_progress == before) {
      std::fprintf(stderr,
                   "emulator: deadlock in block (%u, %u, %u): %d threads wait at barriers no other thread reaches "
                   "(a __syncthreads or warp operation in divergent code?)\n",
                   blockIdx.x, blockIdx.y, blockIdx.z, remaining);
      std::abort();
    }
  }
  s.current = -1;
  s.body = nullptr;
}

// Runs `kernel()` for every block of `grid` with `threads` threads per block:
// the block's threads run as fibers (barriers and warp operations need them
// all), blocks one after another.
template <class Kernel>
void emu_launch(EmuDim3 grid, int threads, Kernel kernel) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  gridDim = grid;
  blockDim = EmuDim3{(unsigned)threads, 1, 1};
  EmuBlock block(threads);
  emu_block = &block;
  run_fibers(threads, [&] {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = EmuDim3{x, y, z};
          kernel();
          block.bar.arrive_and_wait();  // the block ends for all its threads
        }
  });
  emu_block = nullptr;
}

}  // namespace

// A fiber waiting at a barrier hands the thread back to the scheduler.
void emu_yield() {
  Scheduler &s = scheduler;
  Fiber &me = s.fibers[s.current];
  switch_context(&me.context, &s.main, s.main_stack, s.main_stack_size, false);
}

namespace {

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

// The entry points of the emulated driver (emulated_driver.cpp): a kernel
// looked up once by name (cuModuleGetFunction), then launched from a
// cuLaunchKernel argument array, whose sizes the driver API does not carry.
extern "C" const void *actial_emu_find(const char *name) {
  const auto &table = kernel_table();
  const auto it = table.find(name);
  return it == table.end() ? nullptr : &it->second;
}

extern "C" void actial_emu_run(const void *kernel, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
                               void **params) {
  const Trampoline &run = *static_cast<const Trampoline *>(kernel);
  emu_launch(EmuDim3{gx, gy, gz}, (int)threads, [&] { run.call(params); });
}
