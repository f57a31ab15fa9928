#include "attention/spectral_norm.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

namespace kdeserve::attention {
namespace {

// Largest eigenvalue of each symmetric PSD matrix g [P, n, n] by power iteration.
at::Tensor top_eigenvalue(const at::Tensor& g, int64_t iters, double rtol, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor u = at::randn({g.size(0), g.size(1), 1}, gen, at::TensorOptions(at::kDouble))
                     .to(g.device());
  u.div_(u.norm(2, {1}, true));
  at::Tensor lambda = at::zeros({g.size(0)}, g.options());
  for (int64_t it = 0; it < iters; ++it) {
    at::Tensor w = at::bmm(g, u);                    // [P, n, 1]
    at::Tensor next = w.norm(2, {1, 2});             // [P]
    u = w / next.clamp_min(1e-300).view({-1, 1, 1});
    const double change = ((next - lambda).abs() / next.clamp_min(1e-300)).max().item<double>();
    lambda = next;
    if (change < rtol) break;
  }
  return lambda;
}

}  // namespace

at::Tensor spectral_norm(const at::Tensor& x, int64_t iters, double rtol, uint64_t seed) {
  TORCH_CHECK(x.dim() >= 2, "spectral_norm: needs a matrix, got ", x.dim(), "-D");
  TORCH_CHECK(iters >= 1, "spectral_norm: iters must be >= 1");
  const int64_t rows = x.size(-2), cols = x.size(-1);
  const auto batch_shape = x.sizes().slice(0, x.dim() - 2);
  if (rows == 0 || cols == 0) return at::zeros(batch_shape, x.options().dtype(at::kDouble));
  at::Tensor a = x.to(at::kDouble).reshape({-1, rows, cols});  // [P, M, N]
  // Power iteration on the smaller Gram matrix: σ_max(x)² = λ_max(xᵀx) = λ_max(x xᵀ).
  at::Tensor gram = cols <= rows ? at::bmm(a.transpose(1, 2), a) : at::bmm(a, a.transpose(1, 2));
  return top_eigenvalue(gram, iters, rtol, seed).sqrt_().view(batch_shape);
}

double relative_spectral_error(const at::Tensor& estimate, const at::Tensor& reference,
                               int64_t iters, double rtol) {
  TORCH_CHECK(estimate.sizes() == reference.sizes(), "relative_spectral_error: shapes differ: ",
              estimate.sizes(), " vs ", reference.sizes());
  const at::Tensor diff = estimate.to(at::kDouble) - reference.to(at::kDouble);
  return spectral_norm(diff, iters, rtol).item<double>() /
         spectral_norm(reference, iters, rtol).item<double>();
}

}  // namespace kdeserve::attention
