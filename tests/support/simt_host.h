#pragma once
/// A host runner for CUDA kernels written to run on both sides (attention/kdeformer/
/// fused_cuda_device.cuh): the CUDA built-ins a kernel uses become these functions, and
/// launch() runs each thread block's threads on their own stacks (ucontext), one block at a
/// time, switching threads at every barrier. So a CPU test checks a kernel's indexing, tiling
/// and arithmetic against its ATen oracle on a machine without a GPU.
///
/// Every warp-level primitive (__syncwarp, __shfl_xor_sync) is a barrier of the whole block
/// here: the kernel must have all its threads reach the same sequence of them, as the
/// KDEformer kernel does (no shuffle inside a branch that differs between warps). A thread that
/// returns while others wait at a barrier aborts the run with a message (a divergent barrier,
/// undefined on the GPU). __shared__ variables become statics (one block runs at a time).
/// Include this before the kernel's source; nothing here is thread-safe across host threads.

#include <cstddef>
#include <cstdint>
#include <functional>

namespace kdeserve::simt {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

/// threadIdx / blockIdx of the running thread.
const Dim3& thread_idx();
const Dim3& block_idx();
/// The block's dynamic shared memory (zero-filled before each block).
void* dynamic_shared();
/// __syncthreads: waits until every thread of the block has arrived.
void sync_threads();
/// __shfl_xor_sync over the warp of 32 consecutive threads: the value of lane ^ lane_mask.
float shfl_xor(float value, int lane_mask);

/// Runs `body` (the kernel call) as `grid` blocks of `threads` threads with `shared_bytes` of
/// dynamic shared memory, blocks in order.
void launch(unsigned grid, unsigned threads, std::size_t shared_bytes,
            const std::function<void()>& body);

}  // namespace kdeserve::simt

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __shared__ static
#define __syncthreads() ::kdeserve::simt::sync_threads()
#define __syncwarp() ::kdeserve::simt::sync_threads()
#define __shfl_xor_sync(mask, value, lane_mask) ::kdeserve::simt::shfl_xor((value), (lane_mask))
#define threadIdx (::kdeserve::simt::thread_idx())
#define blockIdx (::kdeserve::simt::block_idx())
#define KDESERVE_DYNAMIC_SHARED(type, name) \
  type* name = static_cast<type*>(::kdeserve::simt::dynamic_shared())
