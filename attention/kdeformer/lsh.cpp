#include "attention/kdeformer/lsh.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "attention/kdeformer/fused_kernel.h"
#include "attention/random.h"

namespace kdeserve::attention::kdeformer {

at::Tensor lsh_projections(int64_t batch, int64_t heads, int64_t dim, int64_t num_projections,
                           at::ScalarType dtype, at::Device device, const AttentionCall& call) {
  const int64_t groups = batch * heads;
  if (call.injected.projections) {
    const at::Tensor& p = *call.injected.projections;
    const bool shared = p.dim() == 2 && p.size(0) == dim && p.size(1) == num_projections;
    const bool per_head = p.dim() == 4 && p.size(0) == batch && p.size(1) == heads &&
                          p.size(2) == dim && p.size(3) == num_projections;
    TORCH_CHECK(shared || per_head, "kdeformer: injected projections must be [D, r] = [", dim, ", ",
                num_projections, "] or [B, H, D, r], got ", p.sizes());
    TORCH_CHECK(p.is_floating_point(), "kdeformer: injected projections must be floating point");
    at::Tensor out = p.to(device, dtype);
    return shared ? out.unsqueeze(0).expand({groups, dim, num_projections})
                  : out.reshape({groups, dim, num_projections});
  }
  // Drawn in float64 on the CPU so the hyperplanes are the same for every dtype and device.
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kProjections);
      draws.push_back(at::randn({dim, num_projections}, gen, at::TensorOptions(at::kDouble)));
    }
  }
  return at::stack(draws).to(device, dtype);
}

at::Tensor bucket_order_table(int64_t num_projections, BucketOrder order) {
  TORCH_CHECK(num_projections >= 1 && num_projections <= kMaxProjections,
              "kdeformer: num_projections must be in [1, ", kMaxProjections, "], got ",
              num_projections);
  const int64_t size = int64_t{1} << num_projections;
  at::Tensor table = at::empty({size}, at::kLong);
  int64_t* rank = table.data_ptr<int64_t>();
  for (int64_t code = 0; code < size; ++code) {
    if (order == BucketOrder::kReference) {
      rank[code] = code ^ (code >> 1);
    } else {
      int64_t r = code;
      for (int64_t shift = code >> 1; shift != 0; shift >>= 1) r ^= shift;
      rank[code] = r;
    }
  }
  return table;
}

at::Tensor bucket_ranks(const at::Tensor& x, const at::Tensor& projections, BucketOrder order) {
  const int64_t r = projections.size(2);
  if (x.is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble)) {
    // The loop the fused kernel hashes with (fused_kernel.h), so both sort alike.
    const at::Tensor xc = x.contiguous(), pc = projections.to(x.scalar_type()).contiguous();
    const at::Tensor table = bucket_order_table(r, order);
    const int64_t groups = xc.size(0), n = xc.size(1), dim = xc.size(2);
    at::Tensor ranks = at::empty({groups, n}, x.options().dtype(at::kLong));
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "bucket_ranks", [&] {
      const scalar_t* xp = xc.data_ptr<scalar_t>();
      const scalar_t* pp = pc.data_ptr<scalar_t>();
      int64_t* out = ranks.data_ptr<int64_t>();
      const int64_t* tp = table.data_ptr<int64_t>();
      at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g) {
          kernel::hash_ranks(xp + g * n * dim, n, dim, pp + g * dim * r, r, tp, out + g * n);
        }
      });
    });
    return ranks;
  }
  at::Tensor bits = at::bmm(x, projections).gt(0).to(at::kLong);  // [G, N, r]
  at::Tensor powers = at::pow(2, at::arange(r, bits.options()));  // [r]
  at::Tensor codes = bits.mul_(powers).sum(-1);                   // [G, N]
  at::Tensor table = bucket_order_table(r, order).to(x.device());
  return at::take(table, codes);  // [G, N]
}

at::Tensor hash_sort(const at::Tensor& ranks) {
  return std::get<1>(at::sort(ranks, /*stable=*/true, /*dim=*/1, /*descending=*/false));
}

}  // namespace kdeserve::attention::kdeformer
