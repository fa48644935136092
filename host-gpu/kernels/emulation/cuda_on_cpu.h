// The CUDA execution model on CPU threads, enough to run kernels/llama.cu
// where there is no GPU (the tests' kernel checks; see runner.cpp).
//
// A launch runs its blocks one after another on blockDim.x real threads, so
// __syncthreads is a barrier of the block and a warp shuffle is an exchange
// among the 32 threads of a warp with a barrier of the warp.
// __shared__ variables become statics: one block runs at a time, so all of
// its threads see the same ones, as on a GPU. Device intrinsics map to their
// exact libm counterparts.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

namespace emulation {
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline float warp_exchange[32][32];
}  // namespace emulation

inline void __syncthreads() {
    if (!emulation::block_barrier) std::abort();  // a kernel run as independent threads
    emulation::block_barrier->arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned int, float value, int offset) {
    if (!emulation::block_barrier) std::abort();  // a kernel run as independent threads
    unsigned int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    emulation::warp_exchange[warp][lane] = value;
    emulation::warp_barriers[warp]->arrive_and_wait();
    float other = emulation::warp_exchange[warp][lane ^ offset];
    emulation::warp_barriers[warp]->arrive_and_wait();
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
    block_barrier = nullptr;
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

// Runs `call` for every thread of every block of a grid: blockDim.x
// threads, each taking its place in every block in turn; a barrier ends
// each block, so a block's shared statics are not reused while any of its
// threads still runs.
template <typename Call>
void launch(dim3 grid, dim3 block, Call call) {
    unsigned int threads = block.x;
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    warp_barriers.clear();
    for (unsigned int w = 0; w * 32 < threads; ++w) {
        unsigned int lanes = threads - w * 32 < 32 ? threads - w * 32 : 32;
        warp_barriers.push_back(std::make_unique<std::barrier<>>(lanes));
    }
    std::vector<std::thread> running;
    running.reserve(threads);
    for (unsigned int t = 0; t < threads; ++t) {
        running.emplace_back([=, &barrier] {
            threadIdx = dim3{t, 0, 0};
            blockDim = block;
            gridDim = grid;
            for (unsigned int by = 0; by < grid.y; ++by) {
                for (unsigned int bx = 0; bx < grid.x; ++bx) {
                    blockIdx = dim3{bx, by, 0};
                    call();
                    barrier.arrive_and_wait();
                }
            }
        });
    }
    for (auto& thread : running) thread.join();
}
}  // namespace emulation
