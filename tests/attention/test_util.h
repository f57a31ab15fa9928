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
