#pragma once
// Shared helpers of the attention tests.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>

namespace kdeserve::testing {

/// softmax(scale · q kᵀ) v in float64 with the full Nq × Nk matrix: the naive oracle.
inline at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale) {
  at::Tensor s = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-2, -1)).mul_(scale);
  return at::matmul(at::softmax(s, -1), v.to(at::kDouble));
}

/// max |a − b| / max |b|, in float64.
inline double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  return (ad - bd).abs().max().item<double>() / bd.abs().max().item<double>();
}

/// N(0, 1) tensor from a seeded generator.
inline at::Tensor seeded_randn(at::IntArrayRef sizes, uint64_t seed,
                               at::ScalarType dtype = at::kDouble) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(sizes, gen, at::TensorOptions(at::kDouble)).to(dtype);
}

/// The synthetic regimes' clustered self-attention inputs (bench/glove's synthetic generator):
/// n rows around 32 random centres (noise 0.7 per coordinate), rescaled so that the mean squared
/// row norm is `mean_square` (the regime's logit scale at scale 1), and values independent of
/// them around a shared random offset. Draws seeds seed … seed + 4. x, v [1, 1, n, d] float64.
struct ClusteredInputs {
  at::Tensor x, v;
};

inline ClusteredInputs clustered_inputs(int64_t n, int64_t d, double mean_square, uint64_t seed) {
  const at::Tensor centres = seeded_randn({32, d}, seed);
  const at::Tensor which =
      at::randint(32, {n}, at::Generator(at::detail::createCPUGenerator(seed + 1)),
                  at::TensorOptions(at::kLong));
  at::Tensor x = centres.index_select(0, which).add_(seeded_randn({n, d}, seed + 2).mul_(0.7));
  x.mul_(std::sqrt(mean_square / x.square().sum(1).mean().item<double>()));
  ClusteredInputs in;
  in.x = x.view({1, 1, n, d});
  in.v = seeded_randn({1, 1, n, d}, seed + 3).add_(seeded_randn({1, 1, 1, d}, seed + 4).mul_(0.5));
  return in;
}

/// Mean and empirical variance of independent draws of an estimate, for unbiasedness checks: for
/// an unbiased estimator E‖mean − exact‖² = Σ var / draws, so its gap stays within a few
/// standard errors and shrinks as 1/√draws.
struct DrawStats {
  at::Tensor sum, sum_sq;
  int64_t draws = 0;

  void add(const at::Tensor& x) {
    if (!sum.defined()) {
      sum = at::zeros_like(x);
      sum_sq = at::zeros_like(x);
    }
    sum += x;
    sum_sq += x * x;
    ++draws;
  }
  at::Tensor mean() const { return sum / static_cast<double>(draws); }
  /// ‖mean − exact‖ (Frobenius), and over ‖exact‖.
  double gap(const at::Tensor& exact) const { return (mean() - exact).norm().item<double>(); }
  double relative_gap(const at::Tensor& exact) const {
    return gap(exact) / exact.norm().item<double>();
  }
  /// √(Σ var / draws): the expected gap of an unbiased estimator.
  double standard_error() const {
    const at::Tensor m = mean();
    const at::Tensor var = (sum_sq / static_cast<double>(draws) - m * m).clamp_min(0);
    return std::sqrt(var.sum().item<double>() / static_cast<double>(draws));
  }
};

}  // namespace kdeserve::testing
