#pragma once
/// Reformer LSH attention (Kitaev et al. 2020) as the KDEformer authors ran it (root Reformer.py
/// @ majid-daliri/kdeformer 427df2d5, adapted from lucidrains/reformer-pytorch; peers.md §7),
/// with labelled fixes (masked padding, look-back within a round, real keys) and no Nq × Nk
/// tensor (extra memory O(Nq · bucket_size) per round, O(Nk · n_buckets) for the hashes).
///
/// Per (entry, head) and hash round h (n_buckets = 2·⌈n/(2·bucket_size)⌉, n = Nk):
///  1. bucket(x) = argmax [x R_h, −x R_h] with a random rotation R_h [D, n_buckets/2].
///  2. Stable sort by bucket, i.e. by (bucket, position).
///  3. Sorted keys form chunks of bucket_size: chunk c = sorted positions [c·b, (c+1)·b).
///  4. Each query chunk attends to its key chunk and the previous key chunk (none when there is
///     a single chunk in the cycle), giving (O_h, L_h).
/// Then the rounds merge by log-sum-exp (common::lse_merge); a key met in several rounds, or in
/// both chunks of a window, counts each time, as in the reference.
///
/// Keys and queries:
///  - shared_qk (the reference): keys are the L2-normalised queries, hashed and sorted together
///    with them, so query chunk c is key chunk c; a query's own position is dropped from its
///    window unless nothing else is there (the reference's −5e4 taken to its limit: such a round
///    has L_h = −∞, and if every round is so the output is the query's own value).
///  - real keys: queries and keys are hashed with the same R_h and sorted separately; query chunk
///    c holds the sorted query positions [⌊start_c·Nq/Nk⌋, ⌊end_c·Nq/Nk⌋) of key chunk c =
///    [start_c, end_c), so each key chunk gets its share of queries (any Nq, Nk); nothing is
///    treated as "self".
/// mask_padding(false) zero-pads the keys (shared_qk: the whole sequence) to a multiple of
/// 2·bucket_size and lets the zero keys take part, as the reference does.

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::reformer {

/// Why Reformer would compute exact attention on these sizes, or must not run (empty: it runs):
/// shared_qk with Nq ≠ Nk, or real keys with one masked chunk holding every key. Throws on
/// invalid options.
std::string exact_reason(const ReformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it); shared_qk needs Nq = Nk and ignores k.
/// Randomness: call.injected.rotations ([n_hashes, D, n_buckets/2], shared by every entry and
/// head as in the reference, or [B, H, n_hashes, D, n_buckets/2]) or the kRotations streams.
/// Fills num_blocks (chunks per round), block_keys (keys per window) and num_hashes of
/// call.report.
at::Tensor reformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              double scale, const ReformerOptions& options,
                              const AttentionCall& call = {});

}  // namespace kdeserve::attention::reformer
