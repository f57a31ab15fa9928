#include "attention/reformer/reformer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/common/lse_merge.h"
#include "attention/kdeformer/lsh.h"
#include "attention/random.h"

namespace kdeserve::attention::reformer {
namespace {

using common::gather_rows;

at::Tensor pad_rows(const at::Tensor& x, int64_t rows) {
  if (x.size(1) == rows) return x;
  return at::cat({x, at::zeros({x.size(0), rows - x.size(1), x.size(2)}, x.options())}, 1);
}

void check_options(const ReformerOptions& opt) {
  TORCH_CHECK(opt.bucket_size() >= 1, "reformer: bucket_size must be >= 1, got ",
              opt.bucket_size());
  TORCH_CHECK(opt.num_hashes() >= 1, "reformer: num_hashes must be >= 1, got ", opt.num_hashes());
}

// Rotations [G, n_hashes, D, n_buckets/2]: injected, or N(0, 1) from each (entry, head)'s stream.
at::Tensor rotations(int64_t batch, int64_t heads, int64_t hashes, int64_t dim, int64_t half,
                     at::ScalarType dtype, at::Device device, const AttentionCall& call) {
  const int64_t groups = batch * heads;
  if (call.injected.rotations) {
    const at::Tensor& r = *call.injected.rotations;
    const bool shared =
        r.dim() == 3 && r.size(0) == hashes && r.size(1) == dim && r.size(2) == half;
    const bool per_head = r.dim() == 5 && r.size(0) == batch && r.size(1) == heads &&
                          r.size(2) == hashes && r.size(3) == dim && r.size(4) == half;
    TORCH_CHECK(shared || per_head,
                "reformer: injected rotations must be [n_hashes, D, n_buckets/2] = [", hashes, ", ",
                dim, ", ", half, "] or [B, H, n_hashes, D, n_buckets/2], got ", r.sizes());
    TORCH_CHECK(r.is_floating_point(), "reformer: injected rotations must be floating point");
    at::Tensor out = r.to(device, dtype);
    return shared ? out.unsqueeze(0).expand({groups, hashes, dim, half})
                  : out.reshape({groups, hashes, dim, half});
  }
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kRotations);
      draws.push_back(at::randn({hashes, dim, half}, gen, at::TensorOptions(at::kDouble)));
    }
  }
  return at::stack(draws).to(device, dtype);
}

// Stable (bucket, position) order of x [G, n, D] under rotation r [G, D, half] → [G, n].
at::Tensor bucket_order(const at::Tensor& x, const at::Tensor& r) {
  at::Tensor rotated = at::bmm(x, r);
  at::Tensor buckets = at::cat({rotated, rotated.neg()}, 2).argmax(2);
  return kdeformer::hash_sort(buckets);
}

}  // namespace

std::string exact_reason(const ReformerOptions& options, int64_t num_queries, int64_t num_keys) {
  check_options(options);
  if (options.shared_qk() && num_queries != num_keys) {
    return "shared_qk needs Nq = Nk (the keys are the normalised queries), got Nq " +
           std::to_string(num_queries) + ", Nk " + std::to_string(num_keys);
  }
  if (!options.shared_qk() && options.mask_padding() && options.bucket_size() >= num_keys) {
    return "bucket_size " + std::to_string(options.bucket_size()) + " >= Nk " +
           std::to_string(num_keys) + ": one chunk holds every key, so Reformer is exact";
  }
  return {};
}

at::Tensor reformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              double scale, const ReformerOptions& opt, const AttentionCall& call) {
  check_options(opt);
  const bool shared = opt.shared_qk();
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  TORCH_CHECK(!shared || nq == nk, "reformer: shared_qk needs Nq = Nk, got ", nq, " and ", nk);
  const int64_t b = opt.bucket_size(), hashes = opt.num_hashes();
  const int64_t half = (nk + 2 * b - 1) / (2 * b);  // n_buckets / 2
  const int64_t n = opt.mask_padding() ? nk : 2 * b * half;
  const int64_t chunks = (n + b - 1) / b;
  const int64_t cycle = opt.look_back_across_rounds() ? hashes * chunks : chunks;
  const bool look_back = cycle > 1;
  if (call.report != nullptr) {
    call.report->num_blocks = chunks;
    call.report->block_keys = (look_back ? 2 : 1) * std::min(b, n);
    call.report->num_hashes = hashes;
  }
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());

  at::Tensor q3 = q.reshape({groups, nq, dim});
  at::Tensor v3 = pad_rows(v.reshape({groups, nk, dv}), n);
  // The hashed vectors: queries and keys, zero-padded to n rows where padding is unmasked.
  at::Tensor q_hashed = shared ? pad_rows(q3, n) : q3;
  at::Tensor k_hashed = shared ? q_hashed : pad_rows(k.reshape({groups, nk, dim}), n);
  at::Tensor keys = shared ? q_hashed / q_hashed.norm(2, {2}, true).clamp_min_(1e-12) : k_hashed;

  // Key chunk c = sorted positions [c·b, (c+1)·b); its queries in proportion to its keys.
  const std::vector<int64_t> k_start = common::fixed_starts(n, b);
  const common::BlockLayout kl = common::block_layout(k_start, q.device());
  const common::BlockLayout ql =
      common::block_layout(shared ? k_start : common::proportional_starts(k_start, nq), q.device());
  const int64_t kw = kl.width, qw = ql.width, q_rows = chunks * qw;

  // Key chunks of every round first: a round's first chunk may look back into another round.
  at::Tensor rot = rotations(batch, heads, hashes, dim, half, q.scalar_type(), q.device(), call);
  std::vector<at::Tensor> k_order(hashes), q_order(hashes), chunk_keys(hashes);
  for (int64_t h = 0; h < hashes; ++h) {
    at::Tensor r = rot.select(1, h);  // [G, D, half]
    k_order[h] = bucket_order(k_hashed, r);
    q_order[h] = shared ? k_order[h] : bucket_order(q_hashed, r);
    chunk_keys[h] = common::items_of_rows(kl, k_order[h]).view({groups, chunks, kw});
  }
  at::Tensor chunk_pad = kl.row_valid.logical_not().view({chunks, kw});

  std::vector<common::PartialAttention> rounds;
  rounds.reserve(hashes);
  for (int64_t h = 0; h < hashes; ++h) {
    at::Tensor window = chunk_keys[h];  // [G, chunks, W] key positions
    at::Tensor window_pad = chunk_pad;  // [chunks, W]
    if (look_back) {
      at::Tensor prev_keys, prev_pad;
      if (opt.look_back_across_rounds()) {
        // Chunk 0 looks back at the last chunk of the previous round (cyclically).
        const int64_t ph = (h + hashes - 1) % hashes;
        prev_keys = at::cat(
            {chunk_keys[ph].narrow(1, chunks - 1, 1), chunk_keys[h].narrow(1, 0, chunks - 1)}, 1);
      } else {
        prev_keys = chunk_keys[h].roll(1, 1);
      }
      prev_pad = chunk_pad.roll(1, 0);
      window = at::cat({window, prev_keys}, 2);
      window_pad = at::cat({window_pad, prev_pad}, 1);
    }
    const int64_t w = window.size(2);
    at::Tensor q_idx = common::items_of_rows(ql, q_order[h]);  // [G, q_rows]
    at::Tensor qs = gather_rows(q_hashed, q_idx).view({groups * chunks, qw, dim});
    at::Tensor ks =
        gather_rows(keys, window.view({groups, chunks * w})).view({groups * chunks, w, dim});
    at::Tensor vs =
        gather_rows(v3, window.view({groups, chunks * w})).view({groups * chunks, w, dv});
    at::Tensor drop = window_pad.view({1, chunks, 1, w}).expand({groups, chunks, qw, w});
    at::Tensor self_only;
    if (shared) {
      at::Tensor self = q_idx.view({groups, chunks, qw, 1}).eq(window.view({groups, chunks, 1, w}));
      at::Tensor other = drop.logical_or(self).logical_not().any(3, /*keepdim=*/true);
      drop = drop.logical_or(self.logical_and(other));
      self_only = other.logical_not().view({groups, q_rows});
    }
    common::PartialAttention part =
        common::attend_with_lse(qs, ks, vs, scale, drop.reshape({groups * chunks, qw, w}));
    at::Tensor lse = part.lse.view({groups, q_rows});
    if (self_only.defined())
      lse = lse.masked_fill(self_only, -std::numeric_limits<double>::infinity());
    // Back to the original query order (padded query rows are dropped).
    at::Tensor row_of_query = common::rows_of_items(ql, q_order[h]).narrow(1, 0, nq);
    rounds.push_back({gather_rows(part.out.view({groups, q_rows, dv}), row_of_query),
                      gather_rows(lse.unsqueeze(2), row_of_query).squeeze(2)});
  }
  common::PartialAttention merged = common::lse_merge(rounds);
  at::Tensor out = merged.out;
  if (shared) {
    // Every round saw the query alone: it attends to itself.
    out = at::where(merged.lse.isneginf().unsqueeze(2), v3.narrow(1, 0, nq), out);
  }
  return out.view({batch, heads, nq, dv});
}

}  // namespace kdeserve::attention::reformer
