#pragma once
/// Exact attention through LibTorch's at::scaled_dot_product_attention (SDPA), where it has a
/// fused kernel for the inputs: flash attention on CPU; flash, memory-efficient or cuDNN on CUDA.
/// SDPA's unfused "math" path materialises the whole Nq × Nk score matrix, so it is never used:
/// the chunked path (attention/exact.h) is better there.

#include <ATen/core/Tensor.h>

#include <string>

namespace kdeserve::attention {

/// What SDPA would run for one set of inputs.
struct SdpaChoice {
  /// A fused kernel applies.
  bool fused = false;
  /// Its name when fused: "flash", "efficient", "cudnn" or "overrideable".
  std::string kernel;
  /// Why SDPA is not used when !fused (e.g. no fused kernel for Dv != D on CPU, LibTorch 1.x).
  std::string reason;
};

/// Asks LibTorch which SDPA kernel it would pick (at::_fused_sdp_choice); never throws for
/// validated inputs. q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv].
SdpaChoice sdpa_choice(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       double scale);

/// softmax(scale · q kᵀ) v by SDPA's fused kernel: [B, H, Nq, Dv], the dtype of q. Inputs are
/// assumed validated and sdpa_choice(...).fused (TORCH_CHECKed).
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale);

/// true when this LibTorch has SDPA (2.1 and later: the scale argument).
bool sdpa_compiled();

}  // namespace kdeserve::attention
