#pragma once
/// The fused CUDA kernel of KDEformer (Alg. 3) over raw device pointers: no LibTorch in here,
/// as flash-attention's csrc keeps its kernels apart from the torch-facing file
/// (fused_cuda.h is that file). The ATen composition on the GPU (kdeformer.h) is its oracle:
/// same hash order, same samples, the same arithmetic up to float32 rounding.
///
/// One thread block per (entry·head, diagonal block, chunk of kCudaQueriesPerCta queries): its
/// warps hold kCudaQueriesPerWarp queries each in registers and stream the block's keys and
/// then the m samples through shared memory in tiles of 32, one key per lane. A first pass takes
/// each query's maximum logit over both parts (the one max-shift of the ATen path), a second
/// the weights e^{s − c} (minus the control variate's f), the normalisers and the value
/// products; the samples of the query's own block are dropped by their sorted position
/// (Alg. 3 step 2: they are exact in A_spar), not by an Nq × m mask.
///
/// Shapes: G = groups (batch · heads), Nq / Nk queries / keys, D head dim, Dv value dim,
/// m samples per group, nb diagonal blocks per group (block j: sorted positions
/// [⌊j·n/nb⌋, ⌊(j+1)·n/nb⌋), common::balanced_starts).

#include <cstdint>
#include <string>

#include "attention/kdeformer/kernel_inputs.h"

namespace kdeserve::attention::kdeformer::cuda_kernel {

/// Queries per warp, held in registers, and warps per thread block.
constexpr int kCudaQueriesPerWarp = 4;
constexpr int kCudaWarps = 4;
constexpr int kCudaQueriesPerCta = kCudaQueriesPerWarp * kCudaWarps;
/// The largest value dim: each lane accumulates Dv / 32 columns of kCudaQueriesPerWarp rows.
constexpr int64_t kCudaMaxDv = 256;

/// One call's device arrays (kernel_inputs.h) and the CUDA kernel's own; every array is
/// contiguous, row-major, owned by the caller.
struct Problem : KernelInputs {
  /// The sorted position of each sampled key (samples > 0): its block follows from it. [G, m]
  const int64_t* sample_position = nullptr;
  /// Control variate (both null otherwise): each query's far-field moments q_iᵀ [Cov(K) |
  /// Σ_j (k_j − k̄) v_jᵀ | k̄] for the scaled query (far_field.h), and Σ_j v_j.
  /// [G, Nq, D + Dv + 1], [G, Dv]
  const float* query_moments = nullptr;
  const float* value_sum = nullptr;
};

/// Keys per tile (one per lane) and the row stride of the tile's transposed keys [D][kTile + 1]
/// in shared memory (the + 1 keeps the lanes' columns in distinct banks).
constexpr int kTile = 32;
constexpr int kKeyStride = kTile + 1;
constexpr int kThreads = kCudaWarps * 32;

/// Dynamic shared memory one thread block takes, in bytes: the tile's keys and values, the
/// warps' scaled queries and their weights of the current tile.
constexpr int64_t shared_bytes(int64_t dim, int64_t dv) {
  return static_cast<int64_t>(sizeof(float)) *
         (dim * kKeyStride + kTile * dv +
          int64_t{kCudaWarps} * kCudaQueriesPerWarp * (dim + kTile));
}

/// Thread blocks per diagonal block: the widest query block ⌈Nq / nb⌉ in chunks of
/// kCudaQueriesPerCta.
inline int64_t chunks_per_block(const Problem& pb) {
  return ((pb.nq + pb.blocks - 1) / pb.blocks + kCudaQueriesPerCta - 1) / kCudaQueriesPerCta;
}

/// The launch's thread blocks: groups · nb · chunks_per_block.
inline int64_t grid_size(const Problem& pb) { return pb.groups * pb.blocks * chunks_per_block(pb); }

/// Value columns each lane accumulates, ⌈Dv / 32⌉ rounded up to the kernel's instances 1, 2, 4, 8.
constexpr int lane_columns(int64_t dv) { return dv <= 32 ? 1 : dv <= 64 ? 2 : dv <= 128 ? 4 : 8; }

/// Why the kernel cannot take these sizes on the current device (empty: it can): tiles larger
/// than the device's shared memory per block (Dv ≤ kCudaMaxDv is the caller's check).
std::string unsupported_reason(int64_t dim, int64_t dv);

/// Launches the kernel on `stream` (a cudaStream_t); returns the launch error's text, empty on
/// success. Asynchronous like any launch: errors of the running kernel surface later.
std::string launch(const Problem& problem, void* stream);

}  // namespace kdeserve::attention::kdeformer::cuda_kernel
