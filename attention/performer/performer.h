#pragma once
/// Performer attention (FAVOR+): positive random features φ with E[φ(q)·φ(k)] = exp(scale q·k),
/// out = φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1), in O((Nq + Nk)·m·(D + Dv)) time and no Nq × Nk tensor.
/// Ports HazyResearch/fly 6b73449a src/models/attention/performer_attention.py (with
/// performer_utils.py, projection_utils.py) and majid-daliri/kdeformer 427df2d5 Performer.py
/// (peers.md §6); PerformerOptions selects either, or the default stabilised mode.
///
/// Randomness: the directions come from call.injected.features ([m, D] or [B, H, m, D]) or from
/// each (entry, head)'s Stream::kFeatures, drawn on every call (Performer.py redraws per call;
/// fly draws once per seed, which a fixed call.seed reproduces).

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::performer {

/// Why Performer would compute exact attention on these sizes, or must not run (empty: it runs).
/// Performer has no exact limit (the estimate stays random for any m), so this is always empty.
std::string exact_reason(const PerformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Rejects bad options (TORCH_CHECK). Fills
/// call.report->num_features.
at::Tensor performer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const PerformerOptions& options,
                               const AttentionCall& call = {});

}  // namespace kdeserve::attention::performer
