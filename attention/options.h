#pragma once
/// Options that select and configure an attention method. Pure data: no parsing, no environment
/// variables; models, tests, benchmarks and the server all build these.

#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>

#include "attention/hyperattention/options.h"
#include "attention/method.h"
#include "attention/performer/options.h"
#include "attention/reformer/options.h"
#include "attention/scatterbrain/options.h"
#include "attention/thinformer/options.h"
#include "attention/wildcat/options.h"

namespace kdeserve::attention {

/// Which distribution the residual keys are drawn from.
enum class Sampling {
  kValueNorm,  ///< p_j ∝ ‖[v_j, 1]‖ / ‖[V, 1]‖²_op + 1/Nk (reference code, §2.2 step 5).
  kUniform,    ///< p_j = 1/Nk: the plain uniform-sampling baseline.
};

/// How KDEformer estimates the part of A outside the diagonal blocks (Alg. 3 step 2).
enum class Residual {
  kSampled,         ///< The paper: Σ_s e^{s_ij_s} [v_j_s, 1] / (m p_j_s) over off-block samples.
  kControlVariate,  ///< A Gaussian far field, summed exactly over every off-block key, plus the
                    ///< samples' unbiased estimate of its error (kdeformer.h has the estimator).
  kMassCalibrated,  ///< The far field's off-block numerator rescaled to the samples' unbiased
                    ///< estimate of the off-block mass (the control variate's denominator).
  kCoreset,         ///< WildCat's weighted coreset of sample_size keys (RPCholesky pivots,
                    ///< Nyström weights) restricted to the off-block keys; no samples.
  kFittedFarField,  ///< The control variate's far field (no samples) corrected by a coreset of
                    ///< sample_size off-block keys whose values are fitted on coreset_fit_rows
                    ///< exact query rows (coreset_fit.h); needs coreset_fit_rows ≥ 1.
};

/// How the coreset residual (Residual::kCoreset) draws its RPCholesky pivots.
enum class CoresetPivots {
  kAccelerated,  ///< Blocks of proposals from the residual diagonal, accepted by rejection
                 ///< (Epperly, Tropp & Webber 2024, accelerated RPCholesky): the same pivot
                 ///< distribution as kSequential, the kernel columns computed as one GEMM per
                 ///< block. Draws from stream_generator(call, entry, head, kUniforms).
  kSequential,   ///< WildCat's pivot-by-pivot Gumbel-max RPCholesky (call.injected.uniforms
                 ///< [rank, Nk] apply): one matrix-vector pass over the keys per pivot.
};

/// Which implementation computes KDEformer.
enum class KdeformerKernel {
  kAuto,   ///< The fused CPU kernel wherever it supports the inputs (measured faster at every
           ///< benchmark shape: bench/RESULTS.md), the ATen composition otherwise (CUDA
           ///< included, until the CUDA kernel has been measured on a GPU).
  kAten,   ///< The ATen composition (kdeformer.h): any device, dtype and residual; the oracle.
  kFused,  ///< The fused kernel (kdeformer/fused.h): the CPU one, or on CUDA tensors the CUDA
           ///< one (kdeformer/fused_cuda.h, KDESERVE_WITH_CUDA builds). Falls back to kAten,
           ///< with the reason, where it does not apply (float64, heavy = false, the
           ///< mass-calibrated or coreset residual; on CUDA Dv > 256 or a CPU-only build).
};

/// Which implementation computes exact attention.
enum class ExactBackend {
  kAuto,     ///< The fastest available for the inputs: SDPA where it has a fused kernel for them
             ///< and was measured faster (bench/RESULTS.md), the chunked path otherwise.
  kChunked,  ///< Ours: query chunks of two GEMMs and ATen's max-shifted softmax (any LibTorch).
  kSdpa,     ///< at::scaled_dot_product_attention's fused kernel (LibTorch >= 2.1: flash on
             ///< CPU; flash, memory-efficient or cuDNN on CUDA). Falls back to kChunked, with
             ///< the reason, where SDPA would only run its unfused math path.
};

/// Returns "exact" / "kdeformer" / "performer" / "reformer" / "scatterbrain" / "hyperattention"
/// / "wildcat" / "thinformer".
std::string to_string(Method method);
/// Returns "gray" / "reference".
std::string to_string(BucketOrder order);
/// Returns "value_norm" / "uniform".
std::string to_string(Sampling sampling);
/// Returns "sampled" / "control_variate" / "mass_calibrated" / "coreset".
std::string to_string(Residual residual);
/// Returns "auto" / "chunked" / "sdpa".
std::string to_string(ExactBackend backend);
/// Returns "auto" / "aten" / "fused".
std::string to_string(KdeformerKernel kernel);
/// Parses the names above; throws c10::Error naming the accepted values otherwise.
Method method_from_string(const std::string& name);
ExactBackend exact_backend_from_string(const std::string& name);
BucketOrder bucket_order_from_string(const std::string& name);
Residual residual_from_string(const std::string& name);
KdeformerKernel kdeformer_kernel_from_string(const std::string& name);

/// Options of exact attention.
struct ExactOptions {
  TORCH_ARG(ExactBackend, backend) = ExactBackend::kAuto;
  /// kChunked: upper bound on the elements of one score chunk [chunk, Nk]; queries are processed
  /// in chunks so peak extra memory is O(chunk · Nk), never Nq × Nk for long sequences.
  TORCH_ARG(int64_t, max_chunk_elements) = int64_t{1} << 22;
};

/// Options of KDEformer (practical version: LSH heavy blocks + importance-sampled residual).
struct KdeformerOptions {
  /// r: hyperplanes of the angular LSH, giving 2^r buckets.
  TORCH_ARG(int64_t, num_projections) = 7;
  /// b: keys per diagonal block in hash-sorted order (the last blocks may hold one fewer).
  TORCH_ARG(int64_t, bucket_size) = 64;
  /// m: keys sampled for the residual; 0 gives the block-diagonal estimate only.
  TORCH_ARG(int64_t, sample_size) = 128;
  /// Power-method iterations for ‖[V, 1]‖²_op (20 in the GloVe/BigGAN code, 32 in ViT).
  TORCH_ARG(int64_t, power_iterations) = 20;
  TORCH_ARG(BucketOrder, bucket_order) = BucketOrder::kGray;
  TORCH_ARG(Sampling, sampling) = Sampling::kValueNorm;
  /// Compute the block-diagonal heavy part. false, with uniform sampling, is the plain
  /// sampling baseline (no LSH at all).
  TORCH_ARG(bool, heavy) = true;
  /// kControlVariate allows sample_size 0: the deterministic blocks + far-field estimate (as
  /// does kMassCalibrated, which then equals it).
  TORCH_ARG(Residual, residual) = Residual::kSampled;
  /// The coreset residual's pivot draws (identical in distribution; kAccelerated is faster).
  TORCH_ARG(CoresetPivots, coreset_pivots) = CoresetPivots::kAccelerated;
  /// Clamp each output coordinate to [min_j v_j, max_j v_j], where exact attention (a convex
  /// combination of the values) always lies; never moves a coordinate away from the exact one.
  TORCH_ARG(bool, clamp_output) = false;
  /// s > 0: calibrate the estimate against s exact rows per (entry, head), drawn uniformly:
  /// out ← μ + λ (out − μ), μ = mean(V) the trivial estimate, λ ∈ [0, 2] the least-squares
  /// coefficient on those rows, which are then replaced by their exact values
  /// (attention/kdeformer/calibration.h). Costs O(s·Nk·(D + Dv)) per (entry, head).
  TORCH_ARG(int64_t, calibration_rows) = 0;
  /// t > 0 (Residual::kCoreset only): fit a ridge correction of the coreset's values to the
  /// exact off-block sums of t query rows per (entry, head), drawn uniformly; those rows are
  /// returned exact (attention/kdeformer/coreset_fit.h). Costs O(t·Nk·(D + Dv) + t·S² + S³).
  TORCH_ARG(int64_t, coreset_fit_rows) = 0;
  /// The implementation; every one computes the same estimate (to float32 rounding).
  TORCH_ARG(KdeformerKernel, kernel) = KdeformerKernel::kAuto;
};

/// Options of one attention call: the method and its settings.
struct AttentionOptions {
  /* implicit */ AttentionOptions(Method method = Method::kExact) : method_(method) {}
  TORCH_ARG(Method, method);
  /// Softmax scale applied to q·k; unset means 1/sqrt(D). Must be finite.
  TORCH_ARG(std::optional<double>, scale) = std::nullopt;
  TORCH_ARG(ExactOptions, exact) = {};
  TORCH_ARG(KdeformerOptions, kdeformer) = {};
  TORCH_ARG(PerformerOptions, performer) = {};
  TORCH_ARG(ReformerOptions, reformer) = {};
  TORCH_ARG(ScatterBrainOptions, scatterbrain) = {};
  TORCH_ARG(HyperAttentionOptions, hyperattention) = {};
  TORCH_ARG(WildCatOptions, wildcat) = {};
  TORCH_ARG(ThinformerOptions, thinformer) = {};
};

}  // namespace kdeserve::attention
