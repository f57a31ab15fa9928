#include "attention/performer/performer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "attention/common/random_features.h"

namespace kdeserve::attention::performer {
namespace {

void check_options(const PerformerOptions& opt) {
  TORCH_CHECK(opt.num_features() >= 1, "performer: num_features must be >= 1, got ",
              opt.num_features());
  TORCH_CHECK(std::isfinite(opt.feature_eps()) && opt.feature_eps() >= 0,
              "performer: feature_eps must be finite and >= 0, got ", opt.feature_eps());
  TORCH_CHECK(std::isfinite(opt.normalization_eps()) && opt.normalization_eps() >= 0,
              "performer: normalization_eps must be finite and >= 0, got ",
              opt.normalization_eps());
}

}  // namespace

std::string exact_reason(const PerformerOptions& options, int64_t, int64_t) {
  check_options(options);
  return {};
}

at::Tensor performer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const PerformerOptions& options,
                               const AttentionCall& call) {
  check_options(options);
  const random_features::GroupedInputs g = random_features::group_inputs(q, k, v);
  const int64_t m = options.num_features();
  if (call.report != nullptr) call.report->num_features = m;
  if (g.nq == 0) return at::empty({g.batch, g.heads, 0, g.dv}, v.options());
  TORCH_CHECK(g.nk >= 1, "performer: needs at least one key");
  const at::Tensor &q3 = g.q, &k3 = g.k;

  using random_features::Directions;
  at::Tensor dirs = random_features::directions(
      g.batch, g.heads, g.dim, m, options.orthogonal() ? Directions::kOrthogonal : Directions::kIid,
      q.scalar_type(), q.device(), call, "performer");
  at::Tensor a = random_features::log_features(q3, dirs, scale, false);  // [G, Nq, m]
  at::Tensor b = random_features::log_features(k3, dirs, scale, false);  // [G, Nk, m]

  at::Tensor qf, kf;
  switch (options.stabilizer()) {
    case PerformerStabilizer::kNone:
      qf = a.exp_();
      kf = b.exp_();
      break;
    case PerformerStabilizer::kRowGlobal: {
      // fly subtracts the max of the projections ω·x̃ alone, the ‖x̃‖²/2 staying in the exponent.
      const double half = 0.5 * scale;
      at::Tensor q_half_norm = q3.square().sum(2, true).mul_(half);  // [G, Nq, 1]
      at::Tensor k_half_norm = k3.square().sum(2, true).mul_(half);  // [G, Nk, 1]
      at::Tensor q_shift = (a + q_half_norm).amax(2, true);
      at::Tensor k_shift = (b + k_half_norm).amax({1, 2}, true);
      qf = a.sub_(q_shift).exp_();
      kf = b.sub_(k_shift).exp_();
      break;
    }
    case PerformerStabilizer::kJoint: {
      random_features::StabilizedFeatures f = random_features::stabilize(a, b);
      qf = f.query;
      kf = f.key;
      break;
    }
  }
  if (options.feature_eps() != 0) {
    qf.add_(options.feature_eps());
    kf.add_(options.feature_eps());
  }
  const double ratio = 1.0 / std::sqrt(static_cast<double>(m));
  qf.mul_(ratio);
  kf.mul_(ratio);

  random_features::LowRankProducts p = random_features::low_rank_products(qf, kf, g.v);
  if (options.normalization_eps() != 0) p.denominator.add_(options.normalization_eps());
  return p.numerator.div_(p.denominator.unsqueeze(2)).view({g.batch, g.heads, g.nq, g.dv});
}

}  // namespace kdeserve::attention::performer
