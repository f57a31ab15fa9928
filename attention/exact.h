#pragma once
/// Exact softmax attention from ATen ops: the CPU path, the CUDA fallback and the oracle of the
/// approximations.

#include <ATen/core/Tensor.h>

#include "attention/options.h"

namespace kdeserve::attention {

/// softmax(scale · q kᵀ) v, max-shifted per row (finite for logits of any size) and computed in
/// query chunks per (entry, head) so the extra memory is O(chunk · Nk) (see
/// ExactOptions::max_chunk_elements).
/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it).
at::Tensor exact_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const ExactOptions& options = {});

}  // namespace kdeserve::attention
