// Every kernel of cuda/*.cu, compiled for the CPU against host_emulator.hpp,
// behind one C entry point that launches a kernel by name with a
// cuLaunchKernel-style argument array (src/cuda/emulator.rs builds it with the
// same plans and geometry as the CUDA wrappers).
#define ACTIAL_HOST_EMULATION 1
#include "host_emulator.hpp"

#include <cstddef>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <sys/mman.h>
#include <ucontext.h>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

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
// Each CUDA thread of a block is a fiber; the launching thread is the
// scheduler. Fibers run round-robin (in the schedule's order, below), each
// until it waits at a barrier (emu_yield) or finishes its last block. A round
// in which no fiber got past a barrier or finished means the block's threads
// wait at different barriers (a __syncthreads in divergent code, say): that is
// reported, not hung on.

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

// ---- schedule ---------------------------------------------------------------------
// The order in which fibers of a block, and blocks of a grid, take their turns.
// A GPU promises no order at all, so a kernel that is right only in the
// default one (thread 0 first, block 0 first) has a race: a shared-memory read
// before the __syncthreads that publishes it, a block reading what another
// block writes. ACTIAL_EMULATOR_SCHEDULE=reverse or shuffle[:SEED] runs the
// same kernels in other orders (CI runs the emulated tests in both), so such
// a race changes results instead of hiding behind ascending order. shuffle
// draws a fresh permutation per round of fibers and per launch, from SEED
// (default 1) and the launch count.
enum class Order { Forward, Reverse, Shuffle };
struct Schedule {
  Order order = Order::Forward;
  uint64_t seed = 1;
};

// Parses forward | reverse | shuffle | shuffle:SEED; false if `v` is none of them.
bool parse_schedule(const char *v, Schedule *out) {
  Schedule s;
  if (std::strcmp(v, "forward") == 0) {
  } else if (std::strcmp(v, "reverse") == 0) {
    s.order = Order::Reverse;
  } else if (std::strcmp(v, "shuffle") == 0) {
    s.order = Order::Shuffle;
  } else if (std::strncmp(v, "shuffle:", 8) == 0 && v[8] != 0) {
    s.order = Order::Shuffle;
    char *end = nullptr;
    s.seed = std::strtoull(v + 8, &end, 10);
    if (*end != 0) return false;
  } else {
    return false;
  }
  *out = s;
  return true;
}

// The schedule of every launch: ACTIAL_EMULATOR_SCHEDULE, read once.
const Schedule &schedule() {
  static const Schedule s = [] {
    Schedule s;
    const char *v = std::getenv("ACTIAL_EMULATOR_SCHEDULE");
    if (v && *v && !parse_schedule(v, &s)) {
      std::fprintf(stderr, "emulator: ACTIAL_EMULATOR_SCHEDULE=%s is not forward, reverse, shuffle or shuffle:SEED\n",
                   v);
      std::abort();
    }
    return s;
  }();
  return s;
}

// 0..n-1 in the schedule's order; `rng` drives the shuffle.
void order_indices(std::vector<unsigned> &idx, size_t n, Order order, std::mt19937_64 &rng) {
  idx.resize(n);
  for (size_t i = 0; i < n; ++i) idx[i] = (unsigned)i;
  switch (order) {
    case Order::Forward:
      break;
    case Order::Reverse:
      std::reverse(idx.begin(), idx.end());
      break;
    case Order::Shuffle:
      std::shuffle(idx.begin(), idx.end(), rng);
      break;
  }
}

// Runs `threads` fibers of `body` to completion on this OS thread, taking
// turns in the schedule's order (re-drawn every round under shuffle).
void run_fibers(int threads, std::function<void()> body, Order order, std::mt19937_64 &rng) {
  Scheduler &s = scheduler;
  if ((int)s.fibers.size() < threads) s.fibers.resize(threads);
  s.body = std::move(body);
  for (int t = 0; t < threads; ++t) {
    Fiber &f = s.fibers[t];
    f.finished = false;
    make_context(&f.context, fiber_stack(f), fiber_main);
  }
  int remaining = threads;
  std::vector<unsigned> turn;
  while (remaining > 0) {
    const unsigned long before = emu_progress;
    order_indices(turn, threads, order, rng);
    for (const unsigned t : turn) {
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

// Flush-to-zero and denormals-are-zero for the launch, as --use_fast_math
// compiles the kernels (.ftz on every f32 instruction); the caller's mode
// comes back afterwards. MXCSR is per OS thread, and all fibers of a launch
// run on the launching one.
struct FlushDenormals {
#if defined(__x86_64__)
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Runs `kernel()` for every block of `grid` with `threads` threads per block:
// the block's threads run as fibers (barriers and warp operations need them
// all), blocks one after another in the schedule's order.
template <class Kernel>
void emu_launch(EmuDim3 grid, int threads, Kernel kernel, const Schedule &sched = schedule()) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  const FlushDenormals ftz;
  static uint64_t launches = 0;
  std::mt19937_64 rng(sched.seed * 0x9e3779b97f4a7c15ull + launches++);
  gridDim = grid;
  blockDim = EmuDim3{(unsigned)threads, 1, 1};
  std::vector<unsigned> blocks;
  order_indices(blocks, (size_t)grid.x * grid.y * grid.z, sched.order, rng);
  EmuBlock block(threads);
  emu_block = &block;
  run_fibers(
      threads,
      [&] {
        for (const unsigned b : blocks) {
          blockIdx = EmuDim3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
          kernel();
          block.bar.arrive_and_wait();  // the block ends for all its threads
        }
      },
      sched.order, rng);
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
  // The most threads per block a GPU launches this kernel with (see below).
  unsigned max_threads = 1024;
};

// What bounds a kernel's block on a GPU: its __launch_bounds__ and its
// registers. An SM has 64K 32-bit registers, handed out per warp in units of
// 256 (8 per thread), so a block of W warps needs W * 32 * round8(registers);
// a launch past either limit fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES.
// (Sessions without a GPU would otherwise only learn this on one.)
unsigned launch_limit(unsigned launch_bounds, unsigned registers) {
  const unsigned per_thread = (std::max(registers, 1u) + 7) / 8 * 8;
  const unsigned warps_by_registers = 65536 / (32 * per_thread);
  return std::min({launch_bounds, 1024u, warps_by_registers * 32});
}

template <class... A, std::size_t... I>
void call_with(void (*f)(A...), void **params, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A> *>(params[I])...);
}

template <class... A>
Trampoline trampoline(void (*f)(A...), unsigned launch_bounds, unsigned registers) {
  return {{sizeof(A)...},
          [f](void **params) { call_with(f, params, std::index_sequence_for<A...>{}); },
          launch_limit(launch_bounds, registers)};
}

// Every extern "C" __global__ kernel of cuda/*.cu, listed by build.rs.
const std::unordered_map<std::string, Trampoline> &kernel_table() {
#define EMU_KERNEL(name, launch_bounds, registers) {#name, trampoline(name, launch_bounds, registers)},
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
// -3 - i if argument i has the wrong size (`*expected` = its size); 1 if a GPU
// would refuse `threads` per block (`*expected` = the most it takes).
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
  if (threads > run.max_threads) {
    *expected = run.max_threads;
    return 1;
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

// The most threads per block a GPU launches `kernel` with (launch bounds, registers).
extern "C" unsigned actial_emu_max_threads(const void *kernel) {
  return static_cast<const Trampoline *>(kernel)->max_threads;
}

extern "C" void actial_emu_run(const void *kernel, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
                               void **params) {
  const Trampoline &run = *static_cast<const Trampoline *>(kernel);
  emu_launch(EmuDim3{gx, gy, gz}, (int)threads, [&] { run.call(params); });
}

namespace {
// A kernel with two planted races, the kind a schedule must expose: thread 0
// publishes a value in shared memory that the others read with no
// __syncthreads between, and each block takes a ticket from a global counter,
// so `ticket` records the order blocks ran in.
float planted_published;  // the kernel's __shared__ value (reset per launch below)
void emu_planted_race(float *values, int *ticket, int *counter) {
  if (threadIdx.x == 0) {
    planted_published = (float)blockIdx.x + 1.0f;
    ticket[blockIdx.x] = (*counter)++;
  }
  values[blockIdx.x * blockDim.x + threadIdx.x] = planted_published;  // the missing barrier
}
std::mutex planted_mutex;
}  // namespace

// Runs emu_planted_race on `blocks` x `threads` under `schedule` (the
// ACTIAL_EMULATOR_SCHEDULE syntax) for tests/cuda_emulated.rs; each call
// starts with the shared value at 0. Returns 0, or -1 if `schedule` does not
// parse.
extern "C" int actial_emu_planted_race(const char *schedule_text, unsigned blocks, unsigned threads, float *values,
                                       int *ticket) {
  Schedule sched;
  if (!parse_schedule(schedule_text, &sched)) return -1;
  std::lock_guard<std::mutex> lock(planted_mutex);
  planted_published = 0.0f;
  int counter = 0;
  emu_launch(EmuDim3{blocks, 1, 1}, (int)threads, [&] { emu_planted_race(values, ticket, &counter); }, sched);
  return 0;
}
