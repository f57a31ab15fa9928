#pragma once
/// The coreset far field of KDEformer (Residual::kCoreset): WildCat's weighted coreset (RPCholesky
/// pivots with Nyström weights, attention/wildcat) of all the keys, restricted to the keys
/// outside each diagonal block, so the block part stays exact and the coreset only has to
/// represent what the LSH blocks leave out.

#include <ATen/core/Tensor.h>

#include "attention/call.h"
#include "attention/options.h"
#include "attention/wildcat/wildcat.h"

namespace kdeserve::attention::kdeformer {

/// With W' [G, S, Nk] the coreset's weights (e^{β q·k_l} ≈ Σ_s W'_sl e^{β q·k_s + o_s} for every
/// query q), the off-block part of query i in block j is estimated by
///   Σ_{l ∉ blk(j)} e^{β q_i·k_l} [v_l, 1] ≈ Σ_s e^{β q_i·k_s + o_s} (Σ_{l ∉ blk(j)} W'_sl [v_l, 1]).
struct CoresetFarField {
  at::Tensor logits;      ///< [G, R, S] β q_i·k_s + o_s for the padded sorted query rows
  at::Tensor real_max;    ///< [G, R] max_s β q_i·k_s (the coreset keys' own logits)
  at::Tensor off_values;  ///< [G·blocks, S, Dv + 1] Σ_{l ∉ blk} W'_sl [v_l, 1] per block
                          ///< (undefined without off_values: the fitted far field's features)
  at::Tensor pivots;      ///< [G, S] int64 key index of each coreset key
};

/// qs [G, R, D]: the scaled queries in padded sorted rows (R = blocks·qwidth); q_scale [G]: the
/// largest unscaled query norm per group; k3 [G, Nk, D], v3 [G, Nk, Dv]; k_rows [G, blocks·kwidth]
/// the key of each padded sorted key row, key_valid [blocks·kwidth] whether the row holds one.
/// rank: S (every key, with W' = I, when Nk ≤ rank: the estimate is then exact). Randomness
/// (batch, heads give the per-(entry, head) streams of `call`): kSequential pivots use
/// wildcat::gumbel_noise, kAccelerated ones stream_generator(call, entry, head, kUniforms).
/// off_values = false skips the per-block Nyström sums (the fitted far field uses only the
/// coreset's logits).
CoresetFarField coreset_far_field(const at::Tensor& qs, const at::Tensor& q_scale,
                                  const at::Tensor& k3, const at::Tensor& v3,
                                  const at::Tensor& k_rows, const at::Tensor& key_valid,
                                  int64_t blocks, double scale, int64_t rank, int64_t batch,
                                  int64_t heads, CoresetPivots pivots, const AttentionCall& call,
                                  bool off_values = true);

/// The coreset of coreset_far_field (centred keys k3 [G, Nk, D], values [G, Nk, Dv]) and its
/// weights W' [G, S, Nk] in *key_weights: the draws a call with these arguments makes.
wildcat::Coreset far_field_coreset(const at::Tensor& k3, const at::Tensor& values,
                                   const at::Tensor& q_scale, double scale, int64_t rank,
                                   int64_t batch, int64_t heads, CoresetPivots pivots,
                                   const AttentionCall& call, at::Tensor* key_weights);

}  // namespace kdeserve::attention::kdeformer
