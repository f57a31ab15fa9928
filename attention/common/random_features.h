#pragma once
/// Positive random features of the softmax kernel (FAVOR+, Choromanski et al. 2021), shared by
/// Performer and ScatterBrain (peers.md §5.2, §6).
///
/// For directions ω_1 … ω_r ~ N(0, I_D) and x̃ = x·√scale,
///   E_ω[exp(ω·q̃ − ‖q̃‖²/2) · exp(ω·k̃ − ‖k̃‖²/2)] = exp(scale · q·k),
/// so with φ(x) = r^{-1/2} (exp(ω_j·x̃ − ‖x̃‖²/2))_j, φ(q)·φ(k) is an unbiased estimate of the
/// kernel. The cosh map uses [ω·x̃, −ω·x̃] (2r features from r directions), also unbiased.
/// Orthogonal directions (Haar blocks rescaled to Gaussian norms) keep every ω_j ~ N(0, I_D)
/// marginally, so the estimate stays unbiased with lower variance.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "attention/call.h"

namespace kdeserve::attention::random_features {

/// How feature directions are drawn.
enum class Directions {
  kOrthogonal,  ///< ⌈r/D⌉ D×D Haar blocks (QR with sign fix), rows rescaled by ‖N(0, I_D)‖.
  kIid,         ///< iid N(0, 1) entries.
};

/// r directions [r, D] in float64 from `gen`, as HazyResearch/fly's
/// gaussian_orthogonal_random_matrix (scaling 0) or as iid N(0, 1) draws.
at::Tensor draw_directions(int64_t rows, int64_t dim, Directions kind, at::Generator& gen);

/// Directions of every (entry, head): call.injected.features ([r, D] shared, or [B, H, r, D]),
/// else draws from each (entry, head)'s Stream::kFeatures. `who` names the method in errors.
/// Returns [B·H, r, D] in `dtype` on `device`.
at::Tensor directions(int64_t batch, int64_t heads, int64_t dim, int64_t rows, Directions kind,
                      at::ScalarType dtype, at::Device device, const AttentionCall& call,
                      const std::string& who);

/// Log-features without the r^{-1/2}: ω_j·x̃ − ‖x̃‖²/2 with x̃ = x·√scale; with `cosh` the
/// columns are [ω·x̃ − ‖x̃‖²/2, −ω·x̃ − ‖x̃‖²/2]. x [G, N, D], directions [G, r, D] →
/// [G, N, r] (or [G, N, 2r]).
at::Tensor log_features(const at::Tensor& x, const at::Tensor& directions, double scale, bool cosh);

/// Positive features of a query and a key set, shifted so that no exp overflows and every
/// query has a key-feature pair of product 1:
///   query[g, i, j] · key[g, n, j] · exp(log_scale[g, i]) = exp(a[g, i, j] + b[g, n, j]) / m,
/// with a, b the log-features of queries and keys and m their number of columns. The key
/// columns are shifted by their max over keys, β_j = max_n b_nj, and each query row by
/// α_i = max_j (a_ij + β_j), so the largest entry of every row and column is 1 and
/// query_i·Σ_n key_n ≥ 1 (never 0, at any logit size).
struct StabilizedFeatures {
  at::Tensor query;      ///< [G, Nq, m]
  at::Tensor key;        ///< [G, Nk, m]
  at::Tensor log_scale;  ///< [G, Nq]: α_i − log m
};

/// a [G, Nq, m], b [G, Nk, m] (Nk ≥ 1) → StabilizedFeatures.
StabilizedFeatures stabilize(const at::Tensor& a, const at::Tensor& b);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] with the (entry, head) pairs folded into
/// G = B·H groups, as the feature maps take them.
struct GroupedInputs {
  int64_t batch = 0, heads = 0, nq = 0, nk = 0, dim = 0, dv = 0;
  at::Tensor q;  ///< [G, Nq, D]
  at::Tensor k;  ///< [G, Nk, D]
  at::Tensor v;  ///< [G, Nk, Dv]
};

/// Folds q, k, v as above (views where the inputs allow).
GroupedInputs group_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

/// The low-rank attention products of features over all keys: query features qf [G, Nq, m],
/// key features kf [G, Nk, m], values v [G, Nk, Dv].
struct LowRankProducts {
  at::Tensor numerator;    ///< [G, Nq, Dv]: φ(q)·(φ(K)ᵀ V), the m × Dv context formed first
  at::Tensor denominator;  ///< [G, Nq]: φ(q)·Σ_n φ(k_n)
};

/// qf, kf, v as in LowRankProducts → LowRankProducts; O((Nq + Nk)·m·Dv), no Nq × Nk tensor.
LowRankProducts low_rank_products(const at::Tensor& qf, const at::Tensor& kf, const at::Tensor& v);

}  // namespace kdeserve::attention::random_features
