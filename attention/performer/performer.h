#pragma once
/// Performer attention.

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::performer {

/// Why Performer would compute exact attention on these sizes, or must not run (empty: it runs).
std::string exact_reason(const PerformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills its fields of call.report.
at::Tensor performer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale, const PerformerOptions& options, const AttentionCall& call = {});

}  // namespace kdeserve::attention::performer
