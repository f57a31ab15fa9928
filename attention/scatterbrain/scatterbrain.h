#pragma once
/// ScatterBrain attention (Chen et al. 2021): exact attention on a sparse support S plus a
/// Performer low-rank part L with its own contribution on S subtracted, A ≈ S + (L − L|_S),
/// merged per query in the log domain (peers.md §5.3). Ports HazyResearch/fly 6b73449a
/// src/models/attention/sblocal_attention.py (with feature_maps_sb.py, scatterbrain_utils.py,
/// projection_utils.py): cosh positive orthogonal features on x·√scale, softmax_eps 0, the
/// low-rank remainder clamped at ≥ 1e-24 before its log.
///
/// Differences from the reference, all on purpose: the features are shifted by
/// random_features::stabilize (key columns by their max, queries by their row max; the
/// reference's query row max / key global max gives the same values up to rounding, but can
/// lose the whole low-rank part to underflow); any Nq, Nk; no Nq × Nk tensor (the reference
/// builds an additive Nq × Nk mask); the optional LSH-block support (SparseSupport::kLsh).
/// Extra memory O(G·(Nq·(w + 64) + (Nq + Nk)·(m + Dv))) for the band (score blocks of at most
/// w + 63 keys per query), O(G·(Nq·w + (Nq + Nk)·(m + Dv))) for LSH blocks.
///
/// Randomness: m/2 directions from call.injected.features ([m/2, D] or [B, H, m/2, D]) or from
/// each (entry, head)'s Stream::kFeatures; the LSH hyperplanes from call.injected.projections
/// or Stream::kProjections (kdeformer::lsh_projections).

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::scatterbrain {

/// Why ScatterBrain would compute exact attention on these sizes (empty: it runs): the support
/// holds every key of every query (kBand: ⌊w/2⌋ ≥ Nq − 1 and ⌈w/2⌉ ≥ Nk; kLsh: w ≥ Nk). Rejects
/// bad options (TORCH_CHECK).
std::string exact_reason(const ScatterBrainOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Always runs the merge (also where
/// exact_reason is non-empty; then it equals exact attention up to rounding). Fills
/// call.report->num_features, and num_blocks / block_keys for kLsh.
at::Tensor scatterbrain_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale, const ScatterBrainOptions& options,
                                  const AttentionCall& call = {});

}  // namespace kdeserve::attention::scatterbrain
