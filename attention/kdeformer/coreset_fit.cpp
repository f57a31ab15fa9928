#include "attention/kdeformer/coreset_fit.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/random.h"

namespace kdeserve::attention::kdeformer {
namespace {

// A row whose shift c exceeds its true max logit by more than this has an estimate far off
// scale; its weight is capped so that float32 products stay finite (it then counts less).
constexpr double kMaxLogWeight = 60.0;
// 1 − h_i below this means row i alone pins its fit; its leave-one-out residual is then
// unbounded, and the cap only keeps it finite (and large).
constexpr double kMinLooDenominator = 1e-6;

}  // namespace

CoresetFit fit_coreset_values(const at::Tensor& p_cs, const at::Tensor& off,
                              const at::Tensor& block_num, const at::Tensor& block_den,
                              const at::Tensor& shift, const at::Tensor& qs, const at::Tensor& k3,
                              const at::Tensor& v3, const at::Tensor& row_of_query, int64_t rows,
                              int64_t batch, int64_t heads, const AttentionCall& call) {
  TORCH_CHECK(rows >= 1, "fit_coreset_values: rows must be >= 1, got ", rows);
  const int64_t groups = k3.size(0), nk = k3.size(1), dv = v3.size(2);
  const int64_t nq = row_of_query.size(1);
  TORCH_CHECK(groups == batch * heads, "fit_coreset_values: ", groups, " groups for batch ",
              batch, " x heads ", heads);
  const int64_t t = std::min(rows, nq);
  std::vector<at::Tensor> picks;
  picks.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kCoresetFit);
      picks.push_back(at::randperm(nq, gen, at::TensorOptions(at::kLong)).narrow(0, 0, t));
    }
  }
  CoresetFit fit;
  fit.rows = row_of_query.gather(1, at::stack(picks).to(row_of_query.device()));  // [G, t]
  // Exact sums of the t rows, shifted by their own max logit m_i: [G, t, Dv + 1].
  const at::Tensor logits = at::bmm(common::gather_rows(qs, fit.rows), k3.transpose(1, 2));
  const at::Tensor own_max = logits.amax(2);  // [G, t]
  const at::Tensor v1 = at::cat({v3, at::ones({groups, nk, 1}, v3.options())}, 2);
  const at::Tensor sums = at::bmm(logits.sub_(own_max.unsqueeze(2)).exp_(), v1);
  const at::Tensor den = sums.select(2, dv);  // ≥ 1: the max key contributes e^0
  const at::Tensor normalised = sums / den.unsqueeze(2);  // [G, t, Dv + 1], last column 1
  fit.exact = normalised.narrow(2, 0, dv);
  // In the estimate's units (shift c) a row's sums are e^{m − c} · sums; w = 1 / D = e^{c − m} /
  // den. The weighted residual w·(y − x(U − B)) = normalised − w·(block + off) in own units.
  const at::Tensor c_t = shift.gather(1, fit.rows);
  const at::Tensor weight =
      (c_t - own_max).clamp_max_(kMaxLogWeight).exp_().div_(den).unsqueeze(2);  // [G, t, 1]
  const at::Tensor block =
      at::cat({common::gather_rows(block_num, fit.rows),
               common::gather_rows(block_den.unsqueeze(2), fit.rows)}, 2);
  const at::Tensor residual = normalised - (block + common::gather_rows(off, fit.rows)) * weight;
  const at::Tensor x = common::gather_rows(p_cs, fit.rows).mul_(weight);  // [G, t, S]
  // Ridge paths from one eigendecomposition XᵀX = Q Λ Qᵀ: with P = X Q and z = Pᵀ r,
  // ΔU(ρ) = Q (Λ + ρ)⁻¹ z and the leverages h_i(ρ) = Σ_k P_ik² / (λ_k + ρ).
  const auto [lambda_raw, basis] = at::linalg_eigh(at::bmm(x.transpose(1, 2), x));
  const at::Tensor lambda = lambda_raw.clamp_min(0);                   // [G, S]
  const at::Tensor proj = at::bmm(x, basis);                           // [G, t, S]
  const at::Tensor z = at::bmm(proj.transpose(1, 2), residual);        // [G, S, Dv + 1]
  const at::Tensor mean_diag = lambda.mean(1, /*keepdim=*/true);       // tr(XᵀX) / S
  const at::Tensor proj2 = proj.square();
  // The leave-one-out residual of row i is e_i / (1 − h_i) (the PRESS identity); ρ = ∞ is
  // ΔU = 0, the Nyström values, whose leave-one-out residuals are r itself.
  at::Tensor best_press = residual.square().sum({1, 2});              // [G]
  fit.delta = at::zeros_like(z);
  for (const double ratio : kCoresetFitRidges) {
    const at::Tensor inv = (lambda + mean_diag * ratio)
                               .add_(std::numeric_limits<float>::min()).reciprocal_();  // [G, S]
    const at::Tensor delta = at::bmm(basis, z * inv.unsqueeze(2));  // [G, S, Dv + 1]
    const at::Tensor leverage = at::bmm(proj2, inv.unsqueeze(2)).squeeze(2);  // [G, t]
    const at::Tensor loo = (residual - at::bmm(x, delta))
                               .div_((1 - leverage).clamp_min_(kMinLooDenominator).unsqueeze(2));
    const at::Tensor press = loo.square().sum({1, 2});
    const at::Tensor better = press < best_press;
    best_press = at::where(better, press, best_press);
    fit.delta = at::where(better.view({-1, 1, 1}), delta, fit.delta);
  }
  return fit;
}

at::Tensor apply_coreset_fit(const at::Tensor& off, const at::Tensor& p_cs,
                             const at::Tensor& block_den, const at::Tensor& delta) {
  const int64_t dv = off.size(2) - 1;
  const at::Tensor fitted = at::baddbmm(off, p_cs, delta);
  const at::Tensor before = block_den + off.select(2, dv);
  const at::Tensor after = block_den + fitted.select(2, dv);
  const at::Tensor keep = after.ge(before / kMaxFitMassChange)
                              .logical_and_(after.le(before * kMaxFitMassChange));
  return at::where(keep.unsqueeze(2), fitted, off);
}

}  // namespace kdeserve::attention::kdeformer
