#pragma once
/// The torch-facing side of the fused CUDA KDEformer kernel (fused_cuda_kernel.h): checks, the
/// hash order and the randomness in ATen, exactly as the ATen path computes and draws them
/// (kdeformer.cpp), the far-field moments by one batched product, then the kernel on the
/// current CUDA stream. fused_cuda_inputs is device-agnostic and in every build (the CPU tests
/// run the kernel's source on the host over it); the rest needs KDESERVE_WITH_CUDA.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "attention/call.h"
#include "attention/kdeformer/fused_cuda_kernel.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// The kernel's inputs: `problem` points into the tensors held here. Shapes as in
/// fused_cuda_kernel.h; `out` [G, Nq, Dv] is allocated, not filled.
struct FusedCudaInputs {
  cuda_kernel::Problem problem;
  at::Tensor q, k, v, q_order, k_order;    // [G, N, ·] contiguous, orders [G, N]
  at::Tensor samples, weights, positions;  // [G, m] when m > 0
  at::Tensor query_moments, value_sum;     // control variate only
  at::Tensor value_min, value_max;         // clamp_output only
  at::Tensor out;
};

/// Why the kernel's arithmetic does not cover these inputs and options, on any device (empty:
/// it does): float32, the heavy block part, the sampled or control-variate residual, Dv ≤ 256.
/// q [B, H, Nq, D], v [B, H, Nk, Dv].
std::string fused_cuda_input_reason(const at::Tensor& q, const at::Tensor& v,
                                    const KdeformerOptions& options);

/// Builds the kernel's inputs for q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] on their
/// device (fused_cuda_input_reason must be empty: TORCH_CHECKed; Nq, Dv ≥ 1).
FusedCudaInputs fused_cuda_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale, const KdeformerOptions& options,
                                  const AttentionCall& call);

/// Why the fused CUDA kernel does not compute these inputs and options (empty: it does):
/// fused_cuda_input_reason, CUDA tensors, and tiles that fit the device's shared memory.
/// KDESERVE_WITH_CUDA builds only.
std::string fused_cuda_unsupported_reason(const at::Tensor& q, const at::Tensor& v,
                                          const KdeformerOptions& options);

/// kdeformer_attention's estimate by the fused CUDA kernel: the same hash order, samples,
/// blocks and arithmetic, equal to float32 rounding. q [B, H, Nq, D], k [B, H, Nk, D],
/// v [B, H, Nk, Dv] float32 on one CUDA device → [B, H, Nq, Dv]; fused_cuda_unsupported_reason
/// must be empty (TORCH_CHECKed). Fills the KDEformer fields of call.report when set. Extra
/// memory O(Nq + Nk + m) per (entry, head), plus O(Nq · (D + Dv)) with the control variate.
/// KDESERVE_WITH_CUDA builds only.
at::Tensor kdeformer_fused_cuda_attention(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, double scale,
                                          const KdeformerOptions& options,
                                          const AttentionCall& call = {});

}  // namespace kdeserve::attention::kdeformer
