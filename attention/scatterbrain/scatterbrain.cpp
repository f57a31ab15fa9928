#include "attention/scatterbrain/scatterbrain.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/common/random_features.h"
#include "attention/kdeformer/lsh.h"

namespace kdeserve::attention::scatterbrain {
namespace {

using common::gather_rows;

// Query blocks of the band hold c ∈ [kMinBandBlock, kMaxBandBlock] queries (c = w inside that
// range) and the c + w − 1 keys they reach: tiny blocks would mean many tiny matrix products,
// large ones waste (c − 1)/(c + w − 1) of each score block.
constexpr int64_t kMinBandBlock = 16;
constexpr int64_t kMaxBandBlock = 64;
// The reference's floor on the low-rank remainder before its log.
constexpr double kRemainderFloor = 1e-24;

// The sparse support in block form: `blocks` diagonal blocks of qwidth query rows × kwidth key
// slots per (entry, head); every (row, slot) pair that is not `allowed` is outside the support.
struct Support {
  int64_t blocks = 1, qwidth = 0, kwidth = 0;
  at::Tensor q_rows;        // [G, blocks·qwidth] query index of each row (pads: any query)
  at::Tensor k_slots;       // [G, blocks·kwidth] key index of each slot (pads: any key)
  at::Tensor allowed;       // [1 or G, blocks, qwidth, kwidth] bool
  at::Tensor row_of_query;  // [G, Nq] row of each query
};

// Positional band: query i sees keys i − lower … i − lower + window − 1 that exist. Queries are
// cut into blocks of c; block β's key slots are the c + window − 1 keys its queries can reach.
Support band_support(int64_t groups, int64_t nq, int64_t nk, int64_t w, at::Device device) {
  // Reach beyond the first/last key changes nothing, so it is trimmed (a huge w stays cheap).
  const int64_t lower = std::min(w / 2, nq - 1);
  const int64_t upper = std::min((w + 1) / 2 - 1, nk - 1);
  const int64_t window = lower + upper + 1;
  const int64_t c = std::min(std::clamp(window, kMinBandBlock, kMaxBandBlock), nq);
  Support s;
  s.blocks = (nq + c - 1) / c;
  s.qwidth = c;
  s.kwidth = c + window - 1;
  const at::TensorOptions longs = at::TensorOptions(at::kLong);
  at::Tensor block = at::arange(s.blocks, longs).view({-1, 1, 1});
  at::Tensor t = at::arange(c, longs).view({1, -1, 1});
  at::Tensor u = at::arange(s.kwidth, longs).view({1, 1, -1});
  at::Tensor query = block * c + t;        // [blocks, c, 1]
  at::Tensor key = block * c - lower + u;  // [blocks, 1, kwidth]
  at::Tensor offset = u - t;               // [1, c, kwidth]
  s.allowed = ((query < nq) & (key >= 0) & (key < nk) & (offset >= 0) & (offset < window))
                  .unsqueeze(0)
                  .to(device);
  s.q_rows = query.clamp_max(nq - 1).flatten().to(device).unsqueeze(0).expand({groups, -1});
  s.k_slots = key.clamp(0, nk - 1).flatten().to(device).unsqueeze(0).expand({groups, -1});
  s.row_of_query = at::arange(nq, longs.device(device)).unsqueeze(0).expand({groups, nq});
  return s;
}

// Hash-sorted blocks: ⌈Nk/w⌉ key blocks of at most w keys and as many query blocks.
Support lsh_support(const at::Tensor& q3, const at::Tensor& k3, int64_t batch, int64_t heads,
                    const ScatterBrainOptions& opt, const AttentionCall& call) {
  const int64_t nq = q3.size(1), nk = k3.size(1), dim = q3.size(2);
  const at::Device device = q3.device();
  at::Tensor proj = kdeformer::lsh_projections(batch, heads, dim, opt.num_projections(),
                                               q3.scalar_type(), device, call);
  at::Tensor q_order = kdeformer::hash_sort(kdeformer::bucket_ranks(q3, proj, opt.bucket_order()));
  at::Tensor k_order = kdeformer::hash_sort(kdeformer::bucket_ranks(k3, proj, opt.bucket_order()));
  Support s;
  s.blocks = (nk + opt.local_window() - 1) / opt.local_window();
  // Balanced split: block sizes differ by at most one; rows never narrower than 1.
  const common::BlockLayout ql =
      common::block_layout(common::balanced_starts(nq, s.blocks), device, 1);
  const common::BlockLayout kl =
      common::block_layout(common::balanced_starts(nk, s.blocks), device, 1);
  s.qwidth = ql.width;
  s.kwidth = kl.width;
  s.q_rows = common::items_of_rows(ql, q_order);
  s.k_slots = common::items_of_rows(kl, k_order);
  s.allowed =
      ql.row_valid.view({1, s.blocks, s.qwidth, 1}) & kl.row_valid.view({1, s.blocks, 1, s.kwidth});
  s.row_of_query = common::rows_of_items(ql, q_order);
  return s;
}

void check_options(const ScatterBrainOptions& opt) {
  TORCH_CHECK(opt.local_window() >= 1, "scatterbrain: local_window must be >= 1, got ",
              opt.local_window());
  TORCH_CHECK(opt.num_features() >= 2 && opt.num_features() % 2 == 0,
              "scatterbrain: num_features must be even and >= 2 (cosh features come in pairs), "
              "got ",
              opt.num_features());
  if (opt.support() == SparseSupport::kLsh) {
    TORCH_CHECK(opt.num_projections() >= 1 && opt.num_projections() <= kdeformer::kMaxProjections,
                "scatterbrain: num_projections must be in [1, ", kdeformer::kMaxProjections,
                "], got ", opt.num_projections());
  }
}

}  // namespace

std::string exact_reason(const ScatterBrainOptions& options, int64_t num_queries,
                         int64_t num_keys) {
  check_options(options);
  const int64_t w = options.local_window();
  if (options.support() == SparseSupport::kLsh) {
    if (w >= num_keys) {
      return "scatterbrain: one LSH block of w = " + std::to_string(w) + " holds all " +
             std::to_string(num_keys) + " keys";
    }
    return {};
  }
  if (w / 2 >= num_queries - 1 && (w + 1) / 2 >= num_keys) {
    return "scatterbrain: the band of w = " + std::to_string(w) + " covers all " +
           std::to_string(num_keys) + " keys of all " + std::to_string(num_queries) + " queries";
  }
  return {};
}

at::Tensor scatterbrain_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale, const ScatterBrainOptions& options,
                                  const AttentionCall& call) {
  check_options(options);
  const random_features::GroupedInputs g = random_features::group_inputs(q, k, v);
  const int64_t batch = g.batch, heads = g.heads, nq = g.nq, nk = g.nk, dim = g.dim, dv = g.dv;
  const int64_t groups = batch * heads, m = options.num_features();
  if (call.report != nullptr) call.report->num_features = m;
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());
  TORCH_CHECK(nk >= 1, "scatterbrain: needs at least one key");
  const at::Tensor &q3 = g.q, &k3 = g.k, &v3 = g.v;

  // Low-rank part over all keys: φ(q)·Σφ(k) and φ(q)(φ(K)ᵀV), relative to exp(log_scale).
  at::Tensor dirs = random_features::directions(batch, heads, dim, m / 2,
                                                random_features::Directions::kOrthogonal,
                                                q.scalar_type(), q.device(), call, "scatterbrain");
  random_features::StabilizedFeatures f =
      random_features::stabilize(random_features::log_features(q3, dirs, scale, true),
                                 random_features::log_features(k3, dirs, scale, true));
  const random_features::LowRankProducts lr =
      random_features::low_rank_products(f.query, f.key, v3);
  const at::Tensor &lr_num = lr.numerator, &lr_den = lr.denominator;  // [G, Nq, Dv], [G, Nq]

  const Support s = options.support() == SparseSupport::kLsh
                        ? lsh_support(q3, k3, batch, heads, options, call)
                        : band_support(groups, nq, nk, options.local_window(), q.device());
  if (call.report != nullptr && options.support() == SparseSupport::kLsh) {
    call.report->num_blocks = s.blocks;
    call.report->block_keys = s.kwidth;
  }
  const int64_t nb = groups * s.blocks, rows = s.blocks * s.qwidth;
  const std::vector<int64_t> block_shape = {groups, s.blocks, s.qwidth, s.kwidth};
  at::Tensor outside = s.allowed.logical_not();

  // Exact logits and low-rank products on the support; outside it they contribute nothing.
  at::Tensor q_blk = gather_rows(q3, s.q_rows).mul_(scale).view({nb, s.qwidth, dim});
  at::Tensor k_blk_t = gather_rows(k3, s.k_slots).view({nb, s.kwidth, dim}).transpose(1, 2);
  at::Tensor logits = at::bmm(q_blk, k_blk_t)
                          .view(block_shape)
                          .masked_fill_(outside, -std::numeric_limits<double>::infinity());
  at::Tensor qf_blk = gather_rows(f.query, s.q_rows).view({nb, s.qwidth, m});
  at::Tensor kf_blk_t = gather_rows(f.key, s.k_slots).view({nb, s.kwidth, m}).transpose(1, 2);
  at::Tensor lr_blk = at::bmm(qf_blk, kf_blk_t).view(block_shape).masked_fill_(outside, 0.0);

  // log Z = logaddexp(log Σ_S e^{s}, log(φ(q)·Σφ(k) − Σ_S φ(q)·φ(k)) + log_scale).
  auto per_row = [&](const at::Tensor& x) {  // [G, Nq] → [G, blocks, qwidth]
    return x.gather(1, s.q_rows).view({groups, s.blocks, s.qwidth});
  };
  at::Tensor log_scale = per_row(f.log_scale);
  at::Tensor remainder = (per_row(lr_den) - lr_blk.sum(3)).clamp_min_(kRemainderFloor);
  at::Tensor log_z = at::logaddexp(at::logsumexp(logits, {3}), remainder.log_().add_(log_scale));
  at::Tensor lr_weight = log_scale.sub_(log_z).exp_();  // e^{log_scale} / Z
  at::Tensor weights =
      logits.sub_(log_z.unsqueeze(3)).exp_().sub_(lr_blk.mul_(lr_weight.unsqueeze(3)));
  at::Tensor v_blk = gather_rows(v3, s.k_slots).view({nb, s.kwidth, dv});
  at::Tensor out_rows =
      at::bmm(weights.view({nb, s.qwidth, s.kwidth}), v_blk)
          .view({groups, rows, dv})
          .add_(gather_rows(lr_num, s.q_rows).mul_(lr_weight.view({groups, rows, 1})));
  return gather_rows(out_rows, s.row_of_query).view({batch, heads, nq, dv});
}

}  // namespace kdeserve::attention::scatterbrain
