#pragma once
/// The control variate's far-field moments (kdeformer.h, Residual::kControlVariate), shared by
/// the ATen path and the fused kernel's boundary (fused.cpp).

#include <ATen/core/Tensor.h>

namespace kdeserve::attention::kdeformer {

/// The far field's moments of one (entry, head): exact sums over all Nk keys in O(Nk · D · (D +
/// Dv)). f_ij = α_i (1 + s_ij − s̄_i) with s̄_i = q_i·k̄ and σ²_i = q_iᵀ Cov(K) q_i, the mean and
/// variance of query i's logits over all keys (computed, not sampled).
struct FarField {
  at::Tensor mean_logit;  ///< [G, R] s̄_i
  at::Tensor exponent;    ///< [G, R] s̄_i + σ²_i / 2, before the cap at the shift
  /// [G, R, Dv] Σ_j (1 + s_ij − s̄_i) v_j = Σ_j v_j + q_iᵀ Σ_j (k_j − k̄) v_jᵀ
  at::Tensor num_all;
};

/// The query-independent part: the matrix [Cov(K) | Σ_j (k_j − k̄) v_jᵀ | k̄] that one product
/// applies to the queries, and Σ_j v_j.
struct FarFieldMoments {
  at::Tensor matrix;     ///< [G, D, D + Dv + 1]
  at::Tensor value_sum;  ///< [G, 1, Dv]
};

/// The moment matrix of keys k [G, Nk, D] and values v [G, Nk, Dv].
FarFieldMoments far_field_moment_matrix(const at::Tensor& k, const at::Tensor& v);

/// Moments for scaled queries qs [G, R, D] (any row order) over keys k [G, Nk, D] and values
/// v [G, Nk, Dv].
FarField far_field_moments(const at::Tensor& qs, const at::Tensor& k, const at::Tensor& v);

}  // namespace kdeserve::attention::kdeformer
