#pragma once
/// KDEformer, practical version (Zandieh et al. 2023, Alg. 3; reference `KDEformer.py`), with
/// the reference's sharp edges fixed: any Nq and Nk (balanced blocks per entry and head, never
/// across them), a per-query max-shift shared by both parts (finite at any logit size), stable
/// hash sort, explicit seeds, and no Nq × Nk tensor (extra memory O(Nq · (b + m))).

#include <ATen/core/Tensor.h>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// The estimate D̃⁻¹ (A_spar [V, 1] + A_res Πᵀ Π [V, 1]), first Dv columns.
/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills the KDEformer fields of
/// call.report when set.
at::Tensor kdeformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call = {});

/// The pieces of one estimate, in original query order, for tests and diagnostics. All sums are
/// relative to the per-query shift c: the true value is the stored one times exp(c).
struct KdeformerParts {
  at::Tensor block_numerator;       ///< [B, H, Nq, Dv] Σ_{j ∈ block(i)} e^{s_ij − c_i} v_j
  at::Tensor block_denominator;     ///< [B, H, Nq]     Σ_{j ∈ block(i)} e^{s_ij − c_i}
  at::Tensor residual_numerator;    ///< [B, H, Nq, Dv] Σ_s [block(j_s) ≠ block(i)] e^{s_ij_s − c_i} v_j_s / (m p_j_s)
  at::Tensor residual_denominator;  ///< [B, H, Nq]     the same with 1 in place of v
  at::Tensor shift;                 ///< [B, H, Nq]     c_i
  at::Tensor query_block;           ///< [B, H, Nq] int64: the diagonal block of each query
  at::Tensor key_block;             ///< [B, H, Nk] int64: the diagonal block of each key
  at::Tensor sample_probabilities;  ///< [B, H, Nk] p_j (original key order); undefined if m = 0
  at::Tensor sample_indices;        ///< [B, H, m] original key indices; undefined if m = 0
  at::Tensor output;                ///< [B, H, Nq, Dv] the estimate
};

/// Runs the estimate and returns its pieces (costs a few extra reorders over
/// kdeformer_attention, which it otherwise equals bit for bit).
KdeformerParts kdeformer_parts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call = {});

}  // namespace kdeserve::attention::kdeformer
