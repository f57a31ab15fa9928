#pragma once
// Shared helpers of the attention tests.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

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

}  // namespace kdeserve::testing
