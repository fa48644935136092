// The CUDA execution model on the CPU, enough to run kernels/llama.cu where
// there is no GPU (the tests' kernel checks; see runner.cpp).
//
// A launch runs its blocks one after another on one CPU thread. A kernel
// whose threads cooperate runs each of a block's threads as a fiber (its
// own stack and registers): __syncthreads is a barrier of
// the block's fibers and a warp shuffle an exchange among the 32 fibers of
// a warp with a barrier of the warp. A fiber runs until it waits at a
// barrier, then the next one runs, so barriers cost a switch, not a trip
// through the OS scheduler; a barrier that some threads never reach aborts
// (on a GPU it would hang). __shared__ variables become statics: one block
// runs at a time, so all of its threads see the same ones, as on a GPU.
// Device intrinsics map to their exact libm counterparts.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <ucontext.h>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

namespace emulation {
// Ends the emulated GPU with `what` on stderr (the Rust side reads a closed
// pipe and reports the GPU gone).
[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "emulated GPU: %s\n", what);
    std::abort();
}

// A barrier of `expected` fibers; `generation` counts its openings.
struct Barrier {
    unsigned int expected = 0, arrived = 0;
    unsigned long long generation = 0;
};

// SOVRA_EMULATION_UCONTEXT chooses the portable switch on x86-64 too (to test it).
#if defined(__x86_64__) && !defined(SOVRA_EMULATION_UCONTEXT)
// A suspended fiber: its stack pointer, its callee-saved registers pushed
// below it. Switching saves six registers and the stack pointer, where
// swapcontext would also save the signal mask, a system call each time.
struct Context {
    void* sp = nullptr;
};

extern "C" void sovra_emulation_switch(void** save_sp, void* load_sp);
asm(R"(
    .pushsection .text
    .globl sovra_emulation_switch
    .type sovra_emulation_switch, @function
sovra_emulation_switch:
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
    .size sovra_emulation_switch, .-sovra_emulation_switch
    .popsection
)");

inline void switch_context(Context& from, Context& to) { sovra_emulation_switch(&from.sp, to.sp); }

// Makes `context` start `entry` (which must never return) on `stack`: the
// first switch to it pops six zeroed registers and "returns" into `entry`
// with the stack aligned as after a call.
inline void start_context(Context& context, char* stack, size_t bytes, void (*entry)()) {
    auto** sp = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15});
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(entry);
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    context.sp = sp;
}
#else
struct Context {
    ucontext_t context;
};

inline void switch_context(Context& from, Context& to) { swapcontext(&from.context, &to.context); }

inline void start_context(Context& context, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&context.context);
    context.context.uc_stack.ss_sp = stack;
    context.context.uc_stack.ss_size = bytes;
    context.context.uc_link = nullptr;
    makecontext(&context.context, entry, 0);
}
#endif

struct Fiber {
    Context context;
    std::unique_ptr<char[]> stack;
    bool done = false;
};

// Each fiber's stack: the kernels keep a few small arrays per thread.
inline constexpr size_t FIBER_STACK_BYTES = 256 * 1024;
// CUDA's largest block, and its warps.
inline constexpr unsigned int MAX_THREADS = 1024;

inline Context scheduler;
inline std::vector<Fiber> fibers;
// The fiber running now, and whether a cooperative launch is under way.
inline unsigned int running = 0;
inline bool cooperative = false;
// Arrivals at barriers and fibers ended: a round of the block's fibers
// that adds none is a deadlock.
inline unsigned long long progress = 0;
// __syncthreads' barrier, and the one that ends each block (apart, so
// that a thread leaving a block early cannot stand in for one at a
// __syncthreads: the mismatch deadlocks and aborts, as it hangs on a GPU).
inline Barrier block_barrier, block_end;
inline Barrier warp_barriers[MAX_THREADS / 32];
inline float warp_exchange[MAX_THREADS / 32][32];

// Waits at `barrier` until all its fibers have arrived, letting the others
// run meanwhile.
inline void wait(Barrier& barrier) {
    if (!cooperative) fail("a barrier in a kernel launched as independent threads");
    unsigned long long generation = barrier.generation;
    ++progress;
    if (++barrier.arrived == barrier.expected) {
        barrier.arrived = 0;
        ++barrier.generation;
        return;
    }
    while (barrier.generation == generation) switch_context(fibers[running].context, scheduler);
}
}  // namespace emulation

inline void __syncthreads() { emulation::wait(emulation::block_barrier); }

inline float __shfl_xor_sync(unsigned int mask, float value, int offset) {
    // The kernels shuffle whole warps only; a partial mask would wait for
    // lanes that never come.
    if (mask != 0xffffffffu || offset < 0 || offset >= 32) emulation::fail("a shuffle of part of a warp");
    unsigned int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    emulation::warp_exchange[warp][lane] = value;
    emulation::wait(emulation::warp_barriers[warp]);
    float other = emulation::warp_exchange[warp][lane ^ offset];
    emulation::wait(emulation::warp_barriers[warp]);
    return other;
}

template <typename To, typename From>
inline To bits_as(From value) {
    static_assert(sizeof(To) == sizeof(From));
    To out;
    std::memcpy(&out, &value, sizeof(To));
    return out;
}

inline float __int_as_float(int v) { return bits_as<float>(v); }
inline int __float_as_int(float v) { return bits_as<int>(v); }
inline float __uint_as_float(unsigned int v) { return bits_as<float>(v); }
inline unsigned int __float_as_uint(float v) { return bits_as<unsigned int>(v); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#define __expf(x) std::exp((float)(x))

namespace emulation {
// Runs `call` for every thread of every block of a grid, one at a time on
// this thread: for kernels whose threads never wait for each other (no
// __syncthreads, no shuffles, no shared memory); one that does aborts.
template <typename Call>
void launch_independent(dim3 grid, dim3 block, Call call) {
    cooperative = false;
    blockDim = block;
    gridDim = grid;
    for (unsigned int by = 0; by < grid.y; ++by) {
        for (unsigned int bx = 0; bx < grid.x; ++bx) {
            blockIdx = dim3{bx, by, 0};
            for (unsigned int t = 0; t < block.x; ++t) {
                threadIdx = dim3{t, 0, 0};
                call();
            }
        }
    }
}

// The body of every fiber of a launch: the launch's call, for every block.
inline void (*fiber_body)(void*) = nullptr;
inline void* fiber_call = nullptr;

inline void fiber_entry() {
    for (unsigned int by = 0; by < gridDim.y; ++by) {
        for (unsigned int bx = 0; bx < gridDim.x; ++bx) {
            blockIdx = dim3{bx, by, 0};
            fiber_body(fiber_call);
            // No thread starts the next block, and reuses its shared
            // statics, while any still runs this one.
            wait(block_end);
        }
    }
    fibers[running].done = true;
    ++progress;
    switch_context(fibers[running].context, scheduler);
    fail("a finished fiber was resumed");
}

// Runs `call` for every thread of every block of a grid: blockDim.x
// fibers, each taking its place in every block in turn; a barrier ends
// each block.
template <typename Call>
void launch(dim3 grid, dim3 block, Call call) {
    unsigned int threads = block.x;
    if (threads == 0 || threads > MAX_THREADS) fail("a block of no threads or of more than 1024");
    // Never moved once made: a ucontext_t may point into itself.
    fibers.reserve(MAX_THREADS);
    while (fibers.size() < threads) {
        fibers.emplace_back();
        fibers.back().stack.reset(new char[FIBER_STACK_BYTES]);
    }
    blockDim = block;
    gridDim = grid;
    block_barrier = Barrier{threads};
    block_end = Barrier{threads};
    for (unsigned int w = 0; w * 32 < threads; ++w) {
        warp_barriers[w] = Barrier{threads - w * 32 < 32 ? threads - w * 32 : 32};
    }
    fiber_body = [](void* c) { (*static_cast<Call*>(c))(); };
    fiber_call = &call;
    for (unsigned int t = 0; t < threads; ++t) {
        Fiber& fiber = fibers[t];
        fiber.done = false;
        start_context(fiber.context, fiber.stack.get(), FIBER_STACK_BYTES, fiber_entry);
    }
    cooperative = true;
    for (unsigned int remaining = threads; remaining > 0;) {
        unsigned long long before = progress;
        for (unsigned int t = 0; t < threads; ++t) {
            if (fibers[t].done) continue;
            running = t;
            threadIdx = dim3{t, 0, 0};
            switch_context(scheduler, fibers[t].context);
            if (fibers[t].done) --remaining;
        }
        // Every fiber waits at a barrier the others will never reach.
        if (remaining > 0 && progress == before) fail("threads wait at barriers the others never reach");
    }
    cooperative = false;
    fiber_call = nullptr;
}
}  // namespace emulation
