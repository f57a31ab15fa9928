#include "attention/kdeformer/calibration.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "attention/random.h"

namespace kdeserve::attention::kdeformer {
namespace {

// Above 2 the bound's factor grows and the fit on s rows starts to chase their noise.
constexpr double kMaxCoefficient = 2.0;

}  // namespace

at::Tensor calibrate_to_mean(at::Tensor estimate, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, double scale, int64_t rows, bool clamp,
                             const AttentionCall& call) {
  TORCH_CHECK(rows >= 1, "calibrate_to_mean: rows must be >= 1, got ", rows);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dv = v.size(3);
  const int64_t s = std::min(rows, nq);
  std::vector<at::Tensor> picks;
  picks.reserve(batch * heads);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kCalibration);
      picks.push_back(at::randperm(nq, gen, at::TensorOptions(at::kLong)).narrow(0, 0, s));
    }
  }
  const at::Tensor idx = at::stack(picks).view({batch, heads, s}).to(q.device());  // [B, H, s]
  const at::Tensor q_r = q.gather(2, idx.unsqueeze(3).expand({batch, heads, s, q.size(3)}));
  // Exact rows in float32 or wider; the row max shift keeps large logits finite.
  const at::Tensor exact =
      at::matmul(at::softmax(at::matmul(q_r, k.transpose(2, 3)).mul_(scale), 3), v);  // [B,H,s,Dv]
  const at::Tensor rows_index = idx.unsqueeze(3).expand({batch, heads, s, dv});
  const at::Tensor mean = v.mean(2, /*keepdim=*/true);  // [B, H, 1, Dv]
  const at::Tensor d = estimate.gather(2, rows_index).sub_(mean);
  const at::Tensor t = exact - mean;
  const at::Tensor dd = d.square().sum({2, 3}, /*keepdim=*/true);
  const at::Tensor dt = (d * t).sum({2, 3}, /*keepdim=*/true);
  // Ô = μ on the rows carries no direction to scale: keep it (λ = 1).
  const at::Tensor lambda =
      at::where(dd > 0, dt / dd, at::ones_like(dd)).clamp_(0.0, kMaxCoefficient);
  at::Tensor out = estimate.sub_(mean).mul_(lambda).add_(mean);
  if (clamp) {
    const auto [lo, hi] = at::aminmax(v, 2, /*keepdim=*/true);
    out.clamp_(lo, hi);
  }
  return out.scatter_(2, rows_index, exact.to(out.scalar_type()));
}

}  // namespace kdeserve::attention::kdeformer
