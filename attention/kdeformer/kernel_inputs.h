#pragma once
/// What both fused KDEformer kernels take (the CPU one, fused_kernel.h, and the CUDA one,
/// fused_cuda_kernel.h, each extend it with their own layout of the residual): sizes, the
/// inputs, their hash-sorted order, the residual's samples, the clamp range and the output.
/// Torch-free; every array is contiguous, row-major and owned by the caller (host or device
/// memory, as the kernel needs).
///
/// Shapes: G = groups (batch · heads), Nq / Nk queries / keys, D head dim, Dv value dim,
/// m samples per group, nb diagonal blocks per group.

#include <cstdint>

namespace kdeserve::attention::kdeformer {

struct KernelInputs {
  int64_t groups = 0, nq = 0, nk = 0, dim = 0, dv = 0;
  int64_t samples = 0;  ///< m (0: the blocks alone)
  int64_t blocks = 0;   ///< nb
  float scale = 1;
  const float* q = nullptr;  ///< [G, Nq, D]
  const float* k = nullptr;  ///< [G, Nk, D]
  const float* v = nullptr;  ///< [G, Nk, Dv]
  /// Hash-sorted order: item at each sorted position. [G, Nq] / [G, Nk]
  const int64_t* q_order = nullptr;
  const int64_t* k_order = nullptr;
  /// The residual's samples (samples > 0): original key index and weight 1 / (m p). [G, m] each
  const int64_t* sample_index = nullptr;
  const float* sample_weight = nullptr;
  /// clamp_output (both null otherwise): the values' range per group. [G, Dv] each
  const float* value_min = nullptr;
  const float* value_max = nullptr;
  float* out = nullptr;  ///< [G, Nq, Dv]
};

}  // namespace kdeserve::attention::kdeformer
