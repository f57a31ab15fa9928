#pragma once
/// Partial attentions with their log-sum-exp, and their overflow-free merge (peers.md §3.5,
/// §7.3). A partial attention over a key set S is the pair (O, L) with
///   O_i = Σ_{j∈S} e^{s_ij} v_j / Σ_{j∈S} e^{s_ij},   L_i = log Σ_{j∈S} e^{s_ij}
/// (s_ij = scale · q_i·k_j plus any log-weight). Disjoint (or deliberately overlapping) key sets
/// merge exactly: O = Σ_t e^{L_t} O_t / Σ_t e^{L_t}, L = log Σ_t e^{L_t}. A row whose key set is
/// empty (every key dropped) has O = 0 and L = −∞ and so contributes nothing to a merge.

#include <ATen/core/Tensor.h>

#include <vector>

namespace kdeserve::attention::common {

/// One partial attention. out [G, R, Dv]; lse [G, R] (−∞ where no key was kept).
struct PartialAttention {
  at::Tensor out;
  at::Tensor lse;
};

/// Softmax attention of each query row over its own key rows, with its log-sum-exp.
/// q [G, R, D], k [G, W, D], v [G, W, Dv]: the R rows of group g attend group g's W keys (a
/// block of queries and its keys, with G = groups · blocks). `drop` (optional, bool) broadcasts to
/// [G, R, W]: true removes that key from that row. `log_weight` (optional, floating) broadcasts
/// to [G, R, W] and is added to the logits (importance weights). Max-shifted per row, so finite
/// at any logit size; rows with every key dropped give out 0, lse −∞.
PartialAttention attend_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 double scale, const at::Tensor& drop = {},
                                 const at::Tensor& log_weight = {});

/// Merges partials of the same rows: out [G, R, Dv], lse [G, R] as above. Every part has the
/// same shape; at least one part. Computed relative to the row max of the lse values, so it
/// never overflows; rows where every part has lse −∞ give out 0, lse −∞.
PartialAttention lse_merge(const std::vector<PartialAttention>& parts);

}  // namespace kdeserve::attention::common
