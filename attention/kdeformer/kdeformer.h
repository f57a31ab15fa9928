#pragma once
/// KDEformer, practical version (Zandieh et al. 2023, Alg. 3; reference `KDEformer.py`), with
/// the reference's sharp edges fixed: any Nq and Nk (balanced blocks per entry and head, never
/// across them), a per-query max-shift shared by both parts (finite at any logit size), stable
/// hash sort, explicit seeds, and no Nq × Nk tensor (extra memory O(Nq · (b + m))).

#include <ATen/core/Tensor.h>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// The estimate D̃⁻¹ (A_spar [V, 1] + A_res Πᵀ Π [V, 1]), first Dv columns (Residual::kSampled).
///
/// Residual::kControlVariate replaces the sampled residual by a control variate. With logits
/// s_ij = scale·q_i·k_j, shift c_i, e_ij = e^{s_ij − c_i}, s̄_i and σ²_i the mean and variance of
/// query i's logits over all keys (exact: q_i·k̄ and q_iᵀ Cov(K) q_i), and the far field
///   f_ij = α_i (1 + s_ij − s̄_i),   α_i = min(e^{s̄_i + σ²_i/2 − c_i}, 1)
/// (the first-order expansion of e^{s − c} around s̄_i, scaled by its mean under Gaussian
/// logits), the numerator of query i (and its denominator, with 1 in place of v_j) is
///   N̂_i = Σ_{j ∈ blk(i)} e_ij v_j + Σ_{j ∉ blk(i)} f_ij v_j
///         + Σ_s [j_s ∉ blk(i)] (e_ij_s − f_ij_s) v_j_s / (m p_j_s).
/// The far-field sum over the off-block keys is exact and costs O(Nk · D · (D + Dv)) per head:
/// Σ_j f_ij v_j = α_i (Σ_j v_j + q_iᵀ Σ_j (k_j − k̄) v_jᵀ), minus the block's own f terms, which
/// ride in the block product. Guarantee: for any α the sampled term is an unbiased estimate of
/// Σ_{j ∉ blk(i)} (e_ij − f_ij) v_j (the paper's step-2 argument with e − f in place of e), so
/// N̂ and D̂ are unbiased, as in the paper; only the variance changes, from that of e_ij v_j to
/// that of (e_ij − f_ij) v_j, which vanishes where the off-block logits are near their mean (the
/// diffuse attention where the paper's estimate is worse than every row = mean(V)). With m = 0
/// the estimate is deterministic and its error is the far field's, Σ_{j ∉ blk(i)} (e − f).
/// Two projections never move the estimate away from the exact value: D̂_i is raised to the
/// lower bound Σ_{blk(i)} e_ij + max_s [j_s ∉ blk(i)] e_ij_s of the true D_i (disjoint keys,
/// positive terms), and with clamp_output each coordinate is clamped to the values' range.
///
/// Residual::kMassCalibrated keeps the control variate's unbiased off-block mass
/// D̂_off = Σ_{j ∉ blk(i)} f_ij + Σ_s [j_s ∉ blk(i)] (e_ij_s − f_ij_s) / (m p_j_s) (at least 0) and
/// spends no samples on the numerator's direction: N̂_off = (Σ_{j ∉ blk(i)} f_ij v_j) · D̂_off /
/// Σ_{j ∉ blk(i)} f_ij. Where the Gaussian far field misses the mass of a cluster of keys beyond
/// the block (peaked attention over large n), the samples restore how much the rest weighs
/// while the far field still says what it averages to; a ratio estimator, biased by O(1/m).
///
/// Residual::kCoreset spends sample_size on S coreset keys instead of samples: WildCat's
/// randomly pivoted Cholesky on all the keys with Nyström weights W' (attention/wildcat), so
/// that e^{s_il} ≈ ê_il = Σ_s e^{s_i,j_s + o_s} W'_sl for every key l. The off-block part is
/// Σ_{l ∉ blk(i)} ê_il [v_l, 1] = Σ_s e^{s_i,j_s + o_s} (W'[V, 1] − W'_blk(i) [V, 1]_blk(i)),
/// one [S, Dv + 1] matrix per block (coreset_far_field.h), so nothing Nq × Nk is formed; the
/// block part stays exact. Guarantee: the error of N̂_i is Σ_{l ∉ blk(i)} (ê_il − e_il) v_l, the
/// off-block entries of WildCat's own error with the same coreset, so every bound on WildCat's
/// row error (RPCholesky's trace-norm bound on the kernel's Nyström error, which Schröder &
/// Mackey carry to the attention output) holds for it, and on the block's keys the error is 0.
/// D̂_i is raised to max(Σ_blk e, max_s e^{s_i,j_s}), each a lower bound of D_i (Nyström weights
/// can be negative), and with clamp_output the output lies in the values' range. Exact when
/// S ≥ Nk (W' = I). Extra memory O(S · (Nk + (Nk / b) · Dv)).
///
/// Residual::kFittedFarField keeps the control variate's far field without samples (block
/// part exact, Σ_{l ∉ blk(i)} f_il [v_l, 1] exact from the moments) and corrects it with the
/// coreset fit of coreset_fit.h: S = sample_size off-block coreset keys (the kCoreset pivots) give
/// each row the features x_i = e^{β q_i·k_s + o_s − c_i}, and ΔU [S, Dv + 1] is the ridge fit of
/// the far field's residual Σ_{l ∉ blk(i)} (e_il − f_il) [v_l, 1] on t = coreset_fit_rows rows
/// whose exact sums are computed (those rows are returned exact). Where attention is diffuse the
/// far field already holds the first-order part of e^s exactly, so the S features only have to
/// fit its curvature, which they do better than the Nyström weights fit e^s itself at small S
/// (bench/RESULTS.md). Guarantee: as for the fitted coreset, ΔU is a function of rows drawn
/// independently of the rest of the estimate, the ridge bounds it and ρ = ∞ (ΔU = 0, chosen by
/// the rows' leave-one-out error when no ridge beats it) is the far field itself, whose error is
/// Σ_{l ∉ blk(i)} (e − f); rows whose denominator the fit would move by more than
/// kMaxFitMassChange keep the far field. It is not unbiased; with calibration_rows the
/// calibration bound holds for it as for any estimate. D̂_i is raised to max(Σ_blk e,
/// max_s e^{β q_i·k_s − c_i}). Exact when t ≥ Nq.
///
/// calibration_rows is applied by attention() after either implementation, not here
/// (calibration.h: the estimate scaled about mean(V) by a coefficient fitted on exact rows).
/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills the KDEformer fields of
/// call.report when set.
at::Tensor kdeformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call = {});

/// TORCH_CHECKs the options every implementation needs (bucket_size ≥ 1, sample_size ≥ 0, r in
/// [1, kMaxProjections], power_iterations ≥ 1, and the combinations kdeformer_attention takes).
void check_options(const KdeformerOptions& options);

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
  /// Control variate only: Σ_{j ∉ block(i)} f_ij v_j and Σ f_ij (the residual_* fields then hold
  /// the sampled Σ_s w_s (e − f) terms) and the denominator's lower bound. Mass-calibrated: the
  /// rescaled N̂_off and D̂_off (the residual_* fields are zero).
  at::Tensor far_field_numerator;    ///< [B, H, Nq, Dv]
  at::Tensor far_field_denominator;  ///< [B, H, Nq]
  at::Tensor denominator_floor;      ///< [B, H, Nq]
};

/// Runs the estimate and returns its pieces (costs a few extra reorders over
/// kdeformer_attention, which it otherwise equals bit for bit for Residual::kSampled and to
/// rounding for kControlVariate, whose block product it splits in two).
KdeformerParts kdeformer_parts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call = {});

}  // namespace kdeserve::attention::kdeformer
