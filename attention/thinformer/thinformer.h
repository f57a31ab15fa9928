#pragma once
/// Thinformer attention.

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::thinformer {

/// Why Thinformer would compute exact attention on these sizes, or must not run (empty: it runs).
std::string exact_reason(const ThinformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills its fields of call.report.
at::Tensor thinformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale, const ThinformerOptions& options, const AttentionCall& call = {});

}  // namespace kdeserve::attention::thinformer
