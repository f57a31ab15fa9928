#include "attention/common/lse_merge.h"

#include <ATen/ATen.h>

#include <limits>

namespace kdeserve::attention::common {

PartialAttention attend_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 double scale, const at::Tensor& drop,
                                 const at::Tensor& log_weight) {
  TORCH_CHECK(q.dim() == 3, "attend_with_lse: q must be [G, R, D], got ", q.sizes());
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3, "attend_with_lse: k, v must be [G, W, D], [G, W, Dv]");
  at::Tensor logits = at::bmm(q, k.transpose(1, 2)).mul_(scale);  // [G, R, W]
  if (log_weight.defined()) logits.add_(log_weight);
  if (drop.defined()) logits.masked_fill_(drop, -std::numeric_limits<double>::infinity());
  at::Tensor row_max = logits.amax(2, /*keepdim=*/true);  // [G, R, 1]
  // An all-dropped row has max −∞; shifting by 0 there keeps e^{−∞} = 0 instead of NaN.
  at::Tensor shift = at::where(at::isfinite(row_max), row_max, at::zeros_like(row_max));
  at::Tensor p = logits.sub_(shift).exp_();     // [G, R, W]
  at::Tensor den = p.sum(2, /*keepdim=*/true);  // [G, R, 1]
  at::Tensor num = at::bmm(p, v);
  at::Tensor empty = den.eq(0);
  PartialAttention result;
  result.out = num.div_(at::where(empty, at::ones_like(den), den));
  result.lse = den.log_().add_(shift).squeeze(2);  // log 0 = −∞ for empty rows
  return result;
}

PartialAttention lse_merge(const std::vector<PartialAttention>& parts) {
  TORCH_CHECK(!parts.empty(), "lse_merge: needs at least one part");
  if (parts.size() == 1) return parts.front();
  std::vector<at::Tensor> lses;
  lses.reserve(parts.size());
  for (const PartialAttention& part : parts) lses.push_back(part.lse);
  at::Tensor lse = at::stack(lses);  // [T, G, R]
  at::Tensor top = lse.amax(0);      // [G, R]
  at::Tensor shift = at::where(at::isfinite(top), top, at::zeros_like(top));
  at::Tensor weights = (lse - shift).exp_();  // [T, G, R], the largest is 1 (or all 0)
  at::Tensor total = weights.sum(0);          // [G, R]
  at::Tensor out = at::zeros_like(parts.front().out);
  for (size_t t = 0; t < parts.size(); ++t) out.addcmul_(parts[t].out, weights[t].unsqueeze(2));
  at::Tensor empty = total.eq(0);
  PartialAttention merged;
  merged.out = out.div_(at::where(empty, at::ones_like(total), total).unsqueeze(2));
  merged.lse = total.log().add_(shift);
  return merged;
}

}  // namespace kdeserve::attention::common
