#include "attention/kdeformer/coreset_far_field.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "attention/common/blocks.h"
#include "attention/random.h"
#include "attention/wildcat/wildcat.h"

namespace kdeserve::attention::kdeformer {

wildcat::Coreset far_field_coreset(const at::Tensor& k3, const at::Tensor& values,
                                   const at::Tensor& q_scale, double scale, int64_t rank,
                                   int64_t batch, int64_t heads, CoresetPivots pivots,
                                   const AttentionCall& call, at::Tensor* key_weights) {
  const int64_t nk = k3.size(1);
  const double floor = wildcat::default_residual_floor(k3.scalar_type());
  if (pivots == CoresetPivots::kAccelerated) {
    TORCH_CHECK(!call.injected.uniforms,
                "kdeformer: injected uniforms are the sequential coreset pivots' Gumbel draws; "
                "set coreset_pivots to kSequential to use them");
    std::vector<at::Generator> generators;
    if (nk > rank) {
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          generators.push_back(stream_generator(call, b, h, Stream::kUniforms));
        }
      }
    }
    return wildcat::compress_bins_accelerated(k3, values, q_scale, scale, rank, generators,
                                              floor, key_weights);
  }
  const at::Tensor gumbel =
      nk > rank ? wildcat::gumbel_noise(call, batch, heads, rank, nk, k3.options()) : at::Tensor();
  return wildcat::compress_bins(k3, values, q_scale, scale, rank, gumbel, floor, key_weights);
}

CoresetFarField coreset_far_field(const at::Tensor& qs, const at::Tensor& q_scale,
                                  const at::Tensor& k3, const at::Tensor& v3,
                                  const at::Tensor& k_rows, const at::Tensor& key_valid,
                                  int64_t blocks, double scale, int64_t rank, int64_t batch,
                                  int64_t heads, CoresetPivots pivots, const AttentionCall& call,
                                  bool off_values) {
  const int64_t groups = k3.size(0), nk = k3.size(1), dv = v3.size(2);
  const int64_t kwidth = k_rows.size(1) / blocks;
  // Softmax is invariant to a shift of all keys, and recentring shrinks the key norms the
  // temperature is set from (as WildCat does). The coreset's logits use the original keys:
  // e^{β q·(k_l − k̄)} ≈ Σ_s W'_sl e^{β q·(k_s − k̄) + o_s} times e^{β q·k̄} on both sides.
  const at::Tensor centred = k3 - k3.mean(1, /*keepdim=*/true);
  at::Tensor v1 = at::cat({v3, at::ones({groups, nk, 1}, v3.options())}, 2);  // [G, Nk, Dv + 1]
  at::Tensor w;  // [G, S, Nk]
  // The coreset's own W'·values are not needed: the per-block sums below add up to them. A
  // zero-width value tensor makes that product free.
  const wildcat::Coreset c = far_field_coreset(centred, v1.narrow(2, 0, 0), q_scale, scale, rank,
                                               batch, heads, pivots, call, &w);
  const int64_t size = c.pivots.size(1);
  CoresetFarField out;
  out.pivots = c.pivots;
  const at::Tensor k_s = common::gather_rows(k3, c.pivots);  // [G, S, D]
  out.logits = at::bmm(qs, k_s.transpose(1, 2));  // [G, R, S]
  out.real_max = out.logits.amax(2);
  out.logits.add_(c.log_offsets.unsqueeze(1));
  if (!off_values) return out;
  // W' per block: its columns in sorted key order, padding zeroed, [G·blocks, S, kwidth].
  at::Tensor w_sorted = w.gather(2, k_rows.unsqueeze(1).expand({groups, size, k_rows.size(1)}));
  if (key_valid.defined()) w_sorted.mul_(key_valid.to(w.scalar_type()));
  w_sorted = w_sorted.view({groups, size, blocks, kwidth}).permute({0, 2, 1, 3}).contiguous();
  const at::Tensor v_sorted = common::gather_rows(v1, k_rows).view({groups * blocks, kwidth, dv + 1});
  at::Tensor in_block = at::bmm(w_sorted.view({groups * blocks, size, kwidth}), v_sorted);
  // W'·[V, 1] over every key is the sum of the blocks' (padding is zeroed); the off-block sums
  // subtract each block's own.
  const at::Tensor per_block = in_block.view({groups, blocks, size, dv + 1});
  const at::Tensor all = per_block.sum(1, /*keepdim=*/true);  // [G, 1, S, Dv + 1]
  out.off_values = per_block.neg().add_(all).view({groups * blocks, size, dv + 1});
  return out;
}

}  // namespace kdeserve::attention::kdeformer
