#pragma once
/// The torch-facing side of the fused CPU KDEformer kernel (fused_kernel.h): checks, the
/// randomness and the small per-(entry, head) statistics in ATen, exactly as the ATen path
/// draws and computes them (kdeformer.cpp), then the kernel over raw pointers in parallel over
/// (entry·head, block) tasks on LibTorch's intra-op thread pool.

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/kdeformer/fused_kernel.h"
#include "attention/kdeformer/kernel_inputs.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// Points `inputs` at q3 [G, Nq, D], k3 [G, Nk, D], v3 [G, Nk, Dv] (contiguous float32) and their
/// hash-sorted orders [G, Nq], [G, Nk] (contiguous int64) and sets the sizes: the part both
/// fused kernels share (the samples, the clamp range and the output are the caller's).
void set_kernel_inputs(KernelInputs& inputs, const at::Tensor& q3, const at::Tensor& k3,
                       const at::Tensor& v3, const at::Tensor& q_order, const at::Tensor& k_order,
                       double scale, int64_t blocks, int64_t samples);

/// Why the fused kernel does not compute these inputs and options (empty: it does): it runs on
/// the CPU, or on CUDA tensors in a KDESERVE_WITH_CUDA build (fused_cuda.h), in float32, with
/// the heavy block part and the sampled or control-variate residual. q [B, H, Nq, D],
/// v [B, H, Nk, Dv].
std::string fused_unsupported_reason(const at::Tensor& q, const at::Tensor& v,
                                     const KdeformerOptions& options);

/// "fused-avx512-cpu", "fused-avx2-cpu" or "fused-baseline-cpu": the variant this CPU runs (the
/// report's backend).
std::string fused_backend_name();

/// The report's backend for inputs on q's device: fused_backend_name() on the CPU,
/// "fused-cuda" on CUDA.
std::string fused_backend_name(const at::Tensor& q);

/// kdeformer_attention's estimate by the fused kernel: the same hash ranks, samples, blocks and
/// arithmetic, equal to float32 rounding. q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv]
/// float32 on the CPU (or on CUDA: kdeformer_fused_cuda_attention) → [B, H, Nq, Dv];
/// fused_unsupported_reason must be empty (TORCH_CHECKed).
/// Fills the KDEformer fields of call.report when set. Extra memory O(Nq · Dv + Nk + m · (D +
/// Dv)) per (entry, head) plus one block's panel and one tile per thread.
at::Tensor kdeformer_fused_attention(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, double scale,
                                     const KdeformerOptions& options,
                                     const AttentionCall& call = {});

/// The same on the CPU with a given variant of the kernel (tests run every variant this CPU
/// supports against the ATen oracle); `isa` must be one of supported_isas().
at::Tensor kdeformer_fused_attention(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, double scale,
                                     const KdeformerOptions& options, const AttentionCall& call,
                                     kernel::Isa isa);

}  // namespace kdeserve::attention::kdeformer
