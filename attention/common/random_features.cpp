#include "attention/common/random_features.h"

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "attention/random.h"

namespace kdeserve::attention::random_features {

at::Tensor draw_directions(int64_t rows, int64_t dim, Directions kind, at::Generator& gen) {
  TORCH_CHECK(rows >= 1 && dim >= 1, "random_features: need rows >= 1 and dim >= 1, got ", rows,
              ", ", dim);
  const at::TensorOptions f64(at::kDouble);
  if (kind == Directions::kIid) return at::randn({rows, dim}, gen, f64);
  const int64_t blocks = (rows + dim - 1) / dim;
  at::Tensor unstructured = at::randn({blocks, dim, dim}, gen, f64);
  at::Tensor q, r;
  std::tie(q, r) = at::linalg_qr(unstructured);
  // Multiplying each column of Q by sign(R_cc) makes Q Haar-distributed (Mezzadri 2007); a
  // plain QR is biased by its sign convention.
  q = q.mul(at::diagonal(r, 0, -2, -1).sign().unsqueeze(1));
  at::Tensor orthonormal = q.transpose(1, 2).reshape({blocks * dim, dim}).narrow(0, 0, rows);
  // Rows of a Haar matrix have unit norm; a Gaussian vector's norm is χ_D, drawn independently.
  at::Tensor norms = at::randn({rows, dim}, gen, f64).norm(2, {1}, true);
  return orthonormal * norms;
}

at::Tensor directions(int64_t batch, int64_t heads, int64_t dim, int64_t rows, Directions kind,
                      at::ScalarType dtype, at::Device device, const AttentionCall& call,
                      const std::string& who) {
  const int64_t groups = batch * heads;
  if (call.injected.features) {
    const at::Tensor& f = *call.injected.features;
    const bool shared = f.dim() == 2 && f.size(0) == rows && f.size(1) == dim;
    const bool per_head = f.dim() == 4 && f.size(0) == batch && f.size(1) == heads &&
                          f.size(2) == rows && f.size(3) == dim;
    TORCH_CHECK(shared || per_head, who, ": injected features must be [r, D] = [", rows, ", ", dim,
                "] or [B, H, r, D], got ", f.sizes());
    TORCH_CHECK(f.is_floating_point(), who, ": injected features must be floating point");
    at::Tensor out = f.to(device, dtype);
    return shared ? out.unsqueeze(0).expand({groups, rows, dim}) : out.reshape({groups, rows, dim});
  }
  // Drawn in float64 on the CPU, so the directions are the same for every dtype and device.
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kFeatures);
      draws.push_back(draw_directions(rows, dim, kind, gen));
    }
  }
  return at::stack(draws).to(device, dtype);
}

at::Tensor log_features(const at::Tensor& x, const at::Tensor& directions, double scale,
                        bool cosh) {
  const double root = std::sqrt(scale);
  at::Tensor xs = x * root;                                   // [G, N, D]
  at::Tensor half_norm = xs.square().sum(2, true).mul_(0.5);  // [G, N, 1]
  at::Tensor proj = at::bmm(xs, directions.transpose(1, 2));  // [G, N, r]
  if (cosh) proj = at::cat({proj, proj.neg()}, 2);
  return proj.sub_(half_norm);
}

StabilizedFeatures stabilize(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(b.size(1) >= 1, "random_features: stabilize needs at least one key");
  const int64_t m = a.size(2);
  at::Tensor beta = b.amax(1, true);  // [G, 1, m]
  StabilizedFeatures f;
  f.key = (b - beta).exp_();                 // [G, Nk, m]
  at::Tensor shifted = a + beta;             // [G, Nq, m]
  at::Tensor alpha = shifted.amax(2, true);  // [G, Nq, 1]
  f.query = shifted.sub_(alpha).exp_();
  f.log_scale = alpha.squeeze(2).sub_(std::log(static_cast<double>(m)));
  return f;
}

GroupedInputs group_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  GroupedInputs g;
  g.batch = q.size(0);
  g.heads = q.size(1);
  g.nq = q.size(2);
  g.dim = q.size(3);
  g.nk = k.size(2);
  g.dv = v.size(3);
  const int64_t groups = g.batch * g.heads;
  g.q = q.reshape({groups, g.nq, g.dim});
  g.k = k.reshape({groups, g.nk, g.dim});
  g.v = v.reshape({groups, g.nk, g.dv});
  return g;
}

LowRankProducts low_rank_products(const at::Tensor& qf, const at::Tensor& kf, const at::Tensor& v) {
  LowRankProducts p;
  p.numerator = at::bmm(qf, at::bmm(kf.transpose(1, 2), v));
  p.denominator = at::bmm(qf, kf.sum(1).unsqueeze(2)).squeeze(2);
  return p;
}

}  // namespace kdeserve::attention::random_features
