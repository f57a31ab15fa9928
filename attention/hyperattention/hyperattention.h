#pragma once
/// HyperAttention, non-causal (Han et al. 2024; insuhan/hyper-attn @ 68b91e9b, the PyTorch
/// path; peers.md §3), with labelled fixes: padding masked, in-block samples de-duplicated in
/// every dtype, any Nq and Nk, explicit per-(entry, head) randomness, and no Nq × Nk tensor
/// (extra memory O(Nq · (b + s))).
///
/// Per (entry, head):
///  1. sortLSH: bits sign(x·w_i) of r hyperplanes (kdeformer::lsh_projections), bucket order
///     (BucketOrder), stable sort; queries and keys are sorted separately.
///  2. Blocks: sorted key positions [j·b, (j+1)·b) form block j (num_blocks = ⌈Nk/b⌉, the last
///     one short). Sorted query positions [⌊min(j·b, Nk)·Nq/Nk⌋, ⌊min((j+1)·b, Nk)·Nq/Nk⌋)
///     are its queries: each block gets the queries in proportion to its keys, which is the
///     reference's split wherever its own reshapes work (e.g. Nq = Nk, or Nq = c·Nk with b | Nk).
///     (O_blk, L_blk) = exact attention of a block's queries over its keys.
///  3. Residual: s keys uniform with replacement over [0, Nk); for each query the samples in
///     its own block are dropped (deduplicate); (O_res, L_res) over the rest, L_res += log(Nk/s).
///     Skipped when s = 0 or there is only one block.
///  4. LSE merge (common::lse_merge), un-sort.
/// Then e^L = Z_blk + (Nk/s) Σ_{sampled ∉ block} e^{s_ij} estimates Σ_j e^{s_ij} without bias, and
/// e^L · out estimates Σ_j e^{s_ij} v_j without bias (with deduplicate and mask_padding).

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::hyperattention {

/// Why HyperAttention would compute exact attention on these sizes (empty: it runs):
/// "Nq < min_seq_len ..." (the reference's fallback), or one masked block holding every key.
/// Throws on invalid options.
std::string exact_reason(const HyperAttentionOptions& options, int64_t num_queries,
                         int64_t num_keys);

/// The estimate and its log-sum-exp, in original query order.
struct HyperAttentionResult {
  at::Tensor output;  ///< [B, H, Nq, Dv]
  at::Tensor lse;     ///< [B, H, Nq] log of the estimated Σ_j e^{scale·q_i·k_j}
};

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Always approximates: min_seq_len is
/// applied by attention() via exact_reason(). Randomness: call.injected.projections ([D, r] or
/// [B, H, D, r]) or the kProjections streams; call.injected.sample_indices ([s] or [B, H, s],
/// original key indices) or the kSamples streams. Fills num_blocks, block_keys and sample_size
/// of call.report.
at::Tensor hyperattention_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    double scale, const HyperAttentionOptions& options,
                                    const AttentionCall& call = {});

/// hyperattention_attention with its log-sum-exp (same output bit for bit).
HyperAttentionResult hyperattention_with_lse(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, double scale,
                                             const HyperAttentionOptions& options,
                                             const AttentionCall& call = {});

}  // namespace kdeserve::attention::hyperattention
