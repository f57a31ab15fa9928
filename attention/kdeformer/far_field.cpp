#include "attention/kdeformer/far_field.h"

#include <ATen/ATen.h>

namespace kdeserve::attention::kdeformer {

FarFieldMoments far_field_moment_matrix(const at::Tensor& k3, const at::Tensor& v3) {
  const int64_t nk = k3.size(1), dim = k3.size(2), dv = v3.size(2);
  const double inv_n = 1.0 / static_cast<double>(nk);
  // Raw moments centred by rank-one corrections (no [G, Nk, ·] temporary, whose fresh pages
  // would cost as much as the products), packed as [Cov(K) | Σ_j (k_j − k̄) v_jᵀ | k̄] so one
  // product applies all three to the queries.
  at::Tensor k_t = k3.transpose(1, 2);                  // [G, D, Nk]
  at::Tensor k_sum = k3.sum(1, /*keepdim=*/true);       // [G, 1, D]
  at::Tensor v_sum = v3.sum(1, /*keepdim=*/true);       // [G, 1, Dv]
  at::Tensor k_mean_t = k_sum.transpose(1, 2) * inv_n;  // [G, D, 1]
  at::Tensor moments = at::empty({k3.size(0), dim, dim + dv + 1}, k3.options());
  at::Tensor cov = moments.narrow(2, 0, dim), cross = moments.narrow(2, dim, dv);
  at::bmm_out(cov, k_t, k3);
  cov.baddbmm_(k_mean_t, k_sum, /*beta=*/1, /*alpha=*/-1).mul_(inv_n);
  at::bmm_out(cross, k_t, v3);
  cross.baddbmm_(k_mean_t, v_sum, /*beta=*/1, /*alpha=*/-1);
  moments.narrow(2, dim + dv, 1).copy_(k_mean_t);
  return {moments, v_sum};
}

FarField far_field_moments(const at::Tensor& qs, const at::Tensor& k3, const at::Tensor& v3) {
  const int64_t dim = k3.size(2), dv = v3.size(2);
  const FarFieldMoments m = far_field_moment_matrix(k3, v3);
  FarField f;
  at::Tensor applied = at::bmm(qs, m.matrix);  // [G, R, D + Dv + 1]
  f.mean_logit = applied.select(2, dim + dv);
  at::Tensor variance = applied.narrow(2, 0, dim).mul_(qs).sum(2).clamp_min_(0);  // [G, R]
  f.exponent = f.mean_logit + variance.mul_(0.5);
  f.num_all = applied.narrow(2, dim, dv).add_(m.value_sum);  // [G, R, Dv]
  return f;
}

}  // namespace kdeserve::attention::kdeformer
