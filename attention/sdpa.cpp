#include "attention/sdpa.h"

#include <ATen/ATen.h>
#include <torch/version.h>

// SDPA with a scale argument arrived in LibTorch 2.1; Debian's 1.13 has none.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define KDESERVE_HAS_SDPA 1
#include <ATen/SDPBackend.h>
#else
#define KDESERVE_HAS_SDPA 0
#endif

namespace kdeserve::attention {

bool sdpa_compiled() { return KDESERVE_HAS_SDPA != 0; }

#if KDESERVE_HAS_SDPA

SdpaChoice sdpa_choice(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       double scale) {
  SdpaChoice choice;
  if (q.size(2) == 0) {
    choice.reason = "no queries";
    return choice;
  }
  const auto backend = static_cast<at::SDPBackend>(
      at::_fused_sdp_choice(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/false,
                            scale));
  switch (backend) {
    case at::SDPBackend::flash_attention:
      choice.kernel = "flash";
      break;
    case at::SDPBackend::efficient_attention:
      choice.kernel = "efficient";
      break;
    case at::SDPBackend::cudnn_attention:
      choice.kernel = "cudnn";
      break;
    case at::SDPBackend::overrideable:
      choice.kernel = "overrideable";
      break;
    case at::SDPBackend::math:
    case at::SDPBackend::error:
      choice.reason = std::string("SDPA has no fused ") + (q.is_cuda() ? "CUDA" : "CPU") +
                      " kernel for " + c10::toString(q.scalar_type()) + " q/k/v with head dims " +
                      std::to_string(q.size(3)) + "/" + std::to_string(v.size(3)) +
                      " (its math path would hold all Nq x Nk scores)";
      return choice;
  }
  choice.fused = true;
  return choice;
}

at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale) {
  TORCH_CHECK(sdpa_choice(q, k, v, scale).fused, "sdpa_attention: no fused SDPA kernel");
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/false, scale);
}

#else

SdpaChoice sdpa_choice(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  SdpaChoice choice;
  choice.reason = "LibTorch " TORCH_VERSION " has no scaled_dot_product_attention (2.1 and later)";
  return choice;
}

at::Tensor sdpa_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {
  TORCH_CHECK(false, "sdpa_attention: LibTorch " TORCH_VERSION " has no SDPA");
}

#endif

}  // namespace kdeserve::attention
