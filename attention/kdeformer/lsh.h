#pragma once
/// Angular (SimHash) LSH with Hamming-ordered buckets: KDEformer Alg. 3, step 1.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// Largest supported number of hyperplanes (2^r bucket-order table entries).
constexpr int64_t kMaxProjections = 20;

/// LSH hyperplanes for every (entry, head): the injected ones, or N(0, 1) draws from each
/// (entry, head)'s projection stream. Returns [B·H, D, r] in `dtype` on `device`.
at::Tensor lsh_projections(int64_t batch, int64_t heads, int64_t dim, int64_t num_projections,
                           at::ScalarType dtype, at::Device device, const AttentionCall& call);

/// The rank of every bucket code along the chosen order: [2^r] int64, rank[code].
/// kGray: position of the code in the reflected Gray sequence (prefix XOR of its bits);
/// kReference: the authors' lookup code ^ (code >> 1).
at::Tensor bucket_order_table(int64_t num_projections, BucketOrder order);

/// Bucket rank of every row of x: bits [x·proj_i > 0], code Σ bit_i 2^i, then the order table.
/// On the CPU the products are summed by kernel::hash_ranks (the fused kernel's own loop).
/// x [G, N, D], projections [G, D, r] → [G, N] int64.
at::Tensor bucket_ranks(const at::Tensor& x, const at::Tensor& projections, BucketOrder order);

/// Stable ascending argsort of ranks along dim 1 (ties keep the original index order).
/// ranks [G, N] → permutation [G, N] int64.
at::Tensor hash_sort(const at::Tensor& ranks);

}  // namespace kdeserve::attention::kdeformer
