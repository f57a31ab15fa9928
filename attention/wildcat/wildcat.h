#pragma once
/// WildCat attention (Schröder & Mackey 2026; peers.md §2), ported from microsoft/wildcat:
/// wildcat/wildcat.py @ e0b728cc (binning, clamp), wildcat/compress_kv.py @ 93e0a28d (newest
/// temperature τ² = ρ₂·k_scale/q_scale, Nyström weights), wildcat/rp_nystrom.py @ 11664462
/// (randomly pivoted Cholesky, Gumbel-max pivots, incremental K_SS⁻¹). Fixes, labelled in the
/// source: the remainder bin takes its own entry's q_scale (the reference reshapes it wrongly
/// when C > 1 and Nk mod C ≠ 0); pivots with a residual at or below a floor are dropped instead
/// of taking rsqrt of it; the exponential-kernel rescaling of W is max-shifted per coreset key
/// in log space, the shift moved into the attention logits, and pivot columns of W are set to
/// the unit vectors they equal (exact, and finite at any key norm); uniforms lie in the open
/// interval (0, 1). No Nq × Nk tensor: memory O(Nk·r/C + Nq·r).
///
/// Injected randomness: call.injected.uniforms, [r/C, Nk] (shared by every entry and head) or
/// [B, H, r/C, Nk], all in (0, 1): u[.., t, j] is the uniform of key j at pivot iteration t of
/// the bin that holds j (r/C is the padded rank over num_bins). Otherwise each (entry, head)
/// draws them from stream_generator(call, entry, head, Stream::kUniforms).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::wildcat {

/// Why WildCat would compute exact attention on these sizes (empty: it runs): when r/C is at
/// least the size of every bin, every key is kept with weight 1. Rejects bad options.
std::string exact_reason(const WildCatOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills report.coreset_size.
at::Tensor wildcat_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             double scale, const WildCatOptions& options,
                             const AttentionCall& call = {});

/// A weighted coreset per group g: exp(β q·k_l) ≈ Σ_s W_sl exp(β q·k_s + offset_s), so
/// Σ_l exp(β q·k_l) v_l ≈ Σ_s exp(β q·k_s + offset_s) values_s and likewise with weights_s.
struct Coreset {
  at::Tensor keys;         ///< [G, S, D] coreset keys (recentred, not scaled)
  at::Tensor values;       ///< [G, S, Dv] W'·V (W' = W row-wise max-shifted)
  at::Tensor weights;      ///< [G, S] W·1
  at::Tensor log_offsets;  ///< [G, S] each row's shift moved out of W
  at::Tensor pivots;       ///< [G, S] int64 index of each coreset key within its group's keys
};

/// compress_kv on one batch of bins: keys [P, n, D] (recentred), values [P, n, Dv], q_scale [P]
/// (max query norm of the bin's entry), gumbel [P, pivots, n] (−log(−log u)). With n <= pivots
/// every key is kept with weight 1 (gumbel unused). floor: residual floor (> 0). When
/// key_weights is non-null it receives W' [P, S, n] itself (values = W'·values, weights = W'·1),
/// for callers that need partial sums of the coreset over subsets of the keys.
Coreset compress_bins(const at::Tensor& keys, const at::Tensor& values, const at::Tensor& q_scale,
                      double scale, int64_t pivots, const at::Tensor& gumbel, double floor,
                      at::Tensor* key_weights = nullptr);

/// compress_bins with accelerated RPCholesky pivots (rp_cholesky.h; Epperly, Tropp & Webber
/// 2024): blocks of proposals from the residual diagonal, accepted by rejection, which gives
/// the pivot distribution of compress_bins' sequential draws with one GEMM per block instead of
/// one matrix-vector pass per pivot. generators: one per bin (P), the only randomness. Slots
/// left when every residual is at or below `floor` are dropped (weight 0).
Coreset compress_bins_accelerated(const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& q_scale, double scale, int64_t pivots,
                                  const std::vector<at::Generator>& generators, double floor,
                                  at::Tensor* key_weights = nullptr);

/// Gumbel noise −log(−log u) [B·H, pivots, Nk] for compress_bins, drawn in float64 (u rounded
/// to float32 could reach 1) and cast to `out`: u from call.injected.uniforms ([pivots, Nk] or
/// [B, H, pivots, Nk], in (0, 1)) or from stream_generator(call, entry, head, kUniforms).
at::Tensor gumbel_noise(const AttentionCall& call, int64_t batch, int64_t heads, int64_t pivots,
                        int64_t nk, const at::TensorOptions& out);

/// The residual floor compress_bins uses for `dtype` when WildCatOptions::residual_floor is 0.
double default_residual_floor(at::ScalarType dtype);

/// compress_kv's temperature constant ρ₂ (τ² = ρ₂·k_scale/q_scale).
double temperature_rho2();

/// Σ_s e^{β q·k_s + o_s} values_s / Σ_s e^{β q·k_s + o_s} weights_s, max-shifted per query;
/// 0 where the denominator (relative to the shift) is <= 1e-20. q [G, Nq, D] → [G, Nq, Dv];
/// the shifted denominators go to *denominator ([G, Nq]) when non-null.
at::Tensor weighted_attention(const at::Tensor& q, const Coreset& coreset, double scale,
                              at::Tensor* denominator = nullptr);

/// Everything of one call, for tests and diagnostics (the same computation as
/// wildcat_attention, which returns `output`).
struct WildCatParts {
  Coreset coreset;         ///< over G = B·H groups; pivots are indices into the Nk keys
  at::Tensor denominator;  ///< [B, H, Nq] relative to each query's shift
  at::Tensor vmin, vmax;   ///< [B, H, Dv]
  at::Tensor output;       ///< [B, H, Nq, Dv]
};
WildCatParts wildcat_parts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const WildCatOptions& options,
                           const AttentionCall& call = {});

}  // namespace kdeserve::attention::wildcat
