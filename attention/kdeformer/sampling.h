#pragma once
/// Importance sampling of residual keys: KDEformer Alg. 3, step 2 (reference `calc_A_res`).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// λ ≈ ‖[V, 1]‖²_op by `iterations` power-method steps on the Gram matrix [V, 1]ᵀ[V, 1], from
/// `init` (normalised first), returning ‖Gram·x‖ of the last step as the reference does.
/// v [G, Nk, Dv], init [G, Dv + 1] → [G].
at::Tensor power_method_lambda(const at::Tensor& v, const at::Tensor& init, int64_t iterations);

/// Start vectors of the power method: the injected ones or N(0, 1) draws from each
/// (entry, head)'s power-init stream. Returns [B·H, Dv + 1] in `dtype` on `device`.
at::Tensor power_init(int64_t batch, int64_t heads, int64_t dim, at::ScalarType dtype,
                      at::Device device, const AttentionCall& call);

/// Sampling probabilities over the keys in original order, [G, Nk], rows summing to 1.
/// kValueNorm: p_j ∝ ‖[v_j, 1]‖ / λ + 1/Nk with λ from power_method_lambda; kUniform: 1/Nk.
at::Tensor sample_probabilities(const at::Tensor& v, Sampling sampling, int64_t power_iterations,
                                const at::Tensor& init);

/// m key indices per (entry, head), drawn with replacement from `probabilities` [G, Nk] using
/// each (entry, head)'s sample stream, or the injected ones. Returns [G, m] int64 original key
/// indices on the probabilities' device.
at::Tensor draw_samples(const at::Tensor& probabilities, int64_t batch, int64_t heads,
                        int64_t sample_size, Sampling sampling, const AttentionCall& call);

/// Alg. 3 step 2's residual samples as every implementation draws them (the ATen path and both
/// fused kernels): the probabilities over the keys, m indices per (entry, head) and their
/// importance weights 1 / (m p). All on v's device.
struct ResidualSamples {
  at::Tensor probabilities;  ///< [G, Nk]
  at::Tensor indices;        ///< [G, m] int64 original key indices, contiguous
  at::Tensor weights;        ///< [G, m] 1 / (m p_j), contiguous
};

/// Draws options.sample_size() (≥ 1) samples per (entry, head) of v [G = B·H, Nk, Dv] with the
/// options' sampling distribution and power iterations, from call's streams (or its injected
/// power_init and sample_indices).
ResidualSamples draw_residual_samples(const at::Tensor& v, int64_t batch, int64_t heads,
                                      const KdeformerOptions& options, const AttentionCall& call);

}  // namespace kdeserve::attention::kdeformer
