#pragma once
/// Reformer attention.

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::reformer {

/// Why Reformer would compute exact attention on these sizes, or must not run (empty: it runs).
std::string exact_reason(const ReformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills its fields of call.report.
at::Tensor reformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale, const ReformerOptions& options, const AttentionCall& call = {});

}  // namespace kdeserve::attention::reformer
