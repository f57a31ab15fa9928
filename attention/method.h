#pragma once
/// The attention methods and the enums their options share (no torch headers).

namespace kdeserve::attention {

/// The attention methods the library implements.
enum class Method {
  kExact,      ///< softmax(q kᵀ · scale) v, chunked over queries.
  kKdeformer,  ///< KDEformer practical algorithm (Zandieh et al. 2023, Alg. 3).
  // The peers (peers.md), each as its reference code computes it, with labelled fixes.
  kPerformer,       ///< FAVOR+ positive random features.
  kReformer,        ///< LSH attention with n_hashes rounds.
  kScatterBrain,    ///< Exact sparse support + Performer low-rank part.
  kHyperAttention,  ///< sortLSH blocks + uniformly sampled residual.
  kWildCat,         ///< RPCholesky weighted coreset (Nyström weights).
  kThinformer,      ///< KH-Compress(g) unweighted coreset.
};

/// Every method, in declaration order (for loops over methods in tests and benchmarks).
inline constexpr Method kAllMethods[] = {
    Method::kExact,        Method::kKdeformer,      Method::kPerformer, Method::kReformer,
    Method::kScatterBrain, Method::kHyperAttention, Method::kWildCat,   Method::kThinformer};

/// How LSH bucket codes are ordered before the hash sort (kdeformer.md §2.6 a).
enum class BucketOrder {
  kGray,       ///< Rank of the code in the reflected Gray sequence: neighbours differ in one bit.
  kReference,  ///< The authors' table lookup perm[code] = code ^ (code >> 1) (for parity tests).
};

}  // namespace kdeserve::attention
