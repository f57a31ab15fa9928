#include "attention/hyperattention/hyperattention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/common/lse_merge.h"
#include "attention/kdeformer/lsh.h"
#include "attention/random.h"

namespace kdeserve::attention::hyperattention {
namespace {

// Sorted positions [start[j], start[j+1]) form segment j, laid out in `width` rows per segment.
struct Layout {
  int64_t segments = 1;
  int64_t width = 0;
  at::Tensor position_of_row;  // [segments·width] sorted position of each row (pads → 0)
  at::Tensor row_pad;          // [segments·width] bool: row holds no position
  at::Tensor row_of_position;  // [n]
};

Layout make_layout(const std::vector<int64_t>& start, int64_t min_width, at::Device device) {
  Layout layout;
  layout.segments = static_cast<int64_t>(start.size()) - 1;
  layout.width = min_width;
  for (int64_t j = 0; j < layout.segments; ++j) {
    layout.width = std::max(layout.width, start[j + 1] - start[j]);
  }
  const int64_t rows = layout.segments * layout.width, n = start.back();
  at::Tensor position_of_row = at::zeros({rows}, at::kLong);
  at::Tensor row_pad = at::ones({rows}, at::kBool);
  at::Tensor row_of_position = at::empty({n}, at::kLong);
  int64_t* por = position_of_row.data_ptr<int64_t>();
  bool* pad = row_pad.data_ptr<bool>();
  int64_t* rop = row_of_position.data_ptr<int64_t>();
  for (int64_t j = 0; j < layout.segments; ++j) {
    for (int64_t p = start[j]; p < start[j + 1]; ++p) {
      const int64_t row = j * layout.width + (p - start[j]);
      por[row] = p;
      pad[row] = false;
      rop[p] = row;
    }
  }
  layout.position_of_row = position_of_row.to(device);
  layout.row_pad = row_pad.to(device);
  layout.row_of_position = row_of_position.to(device);
  return layout;
}

// inv[g, perm[g, i]] = i. perm [G, N] → [G, N].
at::Tensor invert(const at::Tensor& perm) {
  at::Tensor iota = at::arange(perm.size(1), perm.options()).expand_as(perm);
  return at::empty_like(perm).scatter_(1, perm, iota);
}

// Rows of x [G, N, C] selected per group by idx [G, R] → [G, R, C].
at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& idx) {
  const int64_t groups = x.size(0), n = x.size(1), c = x.size(2);
  at::Tensor offsets = at::arange(groups, idx.options()).mul_(n).unsqueeze(1);
  return at::embedding(x.reshape({groups * n, c}), (idx + offsets).flatten())
      .view({groups, idx.size(1), c});
}

void check_options(const HyperAttentionOptions& opt) {
  TORCH_CHECK(opt.block_size() >= 1, "hyperattention: block_size must be >= 1, got ",
              opt.block_size());
  TORCH_CHECK(opt.sample_size() >= 0, "hyperattention: sample_size must be >= 0, got ",
              opt.sample_size());
  TORCH_CHECK(opt.num_projections() >= 1 && opt.num_projections() <= kdeformer::kMaxProjections,
              "hyperattention: num_projections must be in [1, ", kdeformer::kMaxProjections,
              "], got ", opt.num_projections());
  TORCH_CHECK(opt.min_seq_len() >= 0, "hyperattention: min_seq_len must be >= 0, got ",
              opt.min_seq_len());
}

// s original key indices per (entry, head), uniform with replacement: injected or drawn from
// each (entry, head)'s sample stream. → [G, s] int64.
at::Tensor residual_samples(int64_t batch, int64_t heads, int64_t keys, int64_t s,
                            at::Device device, const AttentionCall& call) {
  const int64_t groups = batch * heads;
  if (call.injected.sample_indices) {
    const at::Tensor& idx = *call.injected.sample_indices;
    const bool shared = idx.dim() == 1 && idx.size(0) == s;
    const bool per_head =
        idx.dim() == 3 && idx.size(0) == batch && idx.size(1) == heads && idx.size(2) == s;
    TORCH_CHECK(shared || per_head, "hyperattention: injected sample_indices must be [s] = [", s,
                "] or [B, H, s], got ", idx.sizes());
    at::Tensor out = idx.to(device, at::kLong);
    TORCH_CHECK(
        out.numel() == 0 || (out.min().item<int64_t>() >= 0 && out.max().item<int64_t>() < keys),
        "hyperattention: injected sample_indices must lie in [0, ", keys, ")");
    return shared ? out.unsqueeze(0).expand({groups, s}).contiguous() : out.reshape({groups, s});
  }
  std::vector<at::Tensor> draws;
  draws.reserve(groups);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      at::Generator gen = stream_generator(call, b, h, Stream::kSamples);
      draws.push_back(at::randint(keys, {s}, gen, at::TensorOptions(at::kLong)));
    }
  }
  return at::stack(draws).to(device);
}

}  // namespace

std::string exact_reason(const HyperAttentionOptions& options, int64_t num_queries,
                         int64_t num_keys) {
  check_options(options);
  if (num_queries < options.min_seq_len()) {
    return "Nq " + std::to_string(num_queries) + " < min_seq_len " +
           std::to_string(options.min_seq_len()) +
           ": HyperAttention computes exact attention (as the reference does)";
  }
  if (options.mask_padding() && options.block_size() >= num_keys) {
    return "block_size " + std::to_string(options.block_size()) + " >= Nk " +
           std::to_string(num_keys) + ": one block holds every key, so HyperAttention is exact";
  }
  return {};
}

HyperAttentionResult hyperattention_with_lse(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, double scale,
                                             const HyperAttentionOptions& opt,
                                             const AttentionCall& call) {
  check_options(opt);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  const int64_t b = opt.block_size();
  const int64_t blocks = (nk + b - 1) / b;
  const bool residual = opt.sample_size() > 0 && blocks > 1;
  if (call.report != nullptr) {
    call.report->num_blocks = blocks;
    call.report->block_keys = opt.mask_padding() ? std::min(b, nk) : b;
    call.report->sample_size = residual ? opt.sample_size() : 0;
  }
  if (nq == 0) {
    return {at::empty({batch, heads, 0, dv}, v.options()),
            at::empty({batch, heads, 0}, v.options())};
  }
  at::Tensor q3 = q.reshape({groups, nq, dim});
  at::Tensor k3 = k.reshape({groups, nk, dim});
  at::Tensor v3 = v.reshape({groups, nk, dv});

  // 1. sortLSH, queries and keys separately.
  at::Tensor proj = kdeformer::lsh_projections(batch, heads, dim, opt.num_projections(),
                                               q.scalar_type(), q.device(), call);  // [G, D, r]
  at::Tensor q_order = kdeformer::hash_sort(kdeformer::bucket_ranks(q3, proj, opt.bucket_order()));
  at::Tensor k_order = kdeformer::hash_sort(kdeformer::bucket_ranks(k3, proj, opt.bucket_order()));

  // 2. Key block j = sorted positions [j·b, (j+1)·b); its queries in proportion to its keys.
  std::vector<int64_t> k_start(blocks + 1), q_start(blocks + 1);
  for (int64_t j = 0; j <= blocks; ++j) {
    k_start[j] = std::min(j * b, nk);
    q_start[j] = k_start[j] * nq / nk;
  }
  const Layout kl = make_layout(k_start, opt.mask_padding() ? 0 : b, q.device());
  const Layout ql = make_layout(q_start, 0, q.device());
  const int64_t kw = kl.width, qw = ql.width, rows = blocks * qw;
  at::Tensor q_rows = gather_rows(  // [G, rows, D]
      q3, q_order.gather(1, ql.position_of_row.unsqueeze(0).expand({groups, rows})));
  at::Tensor k_idx =
      k_order.gather(1, kl.position_of_row.unsqueeze(0).expand({groups, blocks * kw}));
  at::Tensor k_blk = gather_rows(k3, k_idx);  // [G, blocks·kw, D]
  at::Tensor v_blk = gather_rows(v3, k_idx);
  at::Tensor drop_blk;
  if (opt.mask_padding()) {
    drop_blk = kl.row_pad.view({1, blocks, 1, kw})
                   .expand({groups, blocks, 1, kw})
                   .reshape({groups * blocks, 1, kw});
  } else {
    // The reference's zero rows: logit 0, value 0, counted in the softmax.
    k_blk.masked_fill_(kl.row_pad.view({1, -1, 1}), 0);
    v_blk.masked_fill_(kl.row_pad.view({1, -1, 1}), 0);
  }
  common::PartialAttention blk = common::attend_with_lse(
      q_rows.view({groups * blocks, qw, dim}), k_blk.view({groups * blocks, kw, dim}),
      v_blk.view({groups * blocks, kw, dv}), scale, drop_blk);
  blk.out = blk.out.view({groups, rows, dv});
  blk.lse = blk.lse.view({groups, rows});

  common::PartialAttention merged = blk;
  if (residual) {
    // 3. Uniform residual samples; those in the query's own block are already exact there.
    const int64_t s = opt.sample_size();
    at::Tensor samples = residual_samples(batch, heads, nk, s, q.device(), call);  // [G, s]
    at::Tensor drop_res;
    if (opt.deduplicate()) {
      at::Tensor sample_block = invert(k_order).gather(1, samples).div_(b, "floor");  // [G, s]
      at::Tensor row_block = at::arange(blocks, samples.options()).repeat_interleave(qw);
      drop_res = row_block.view({1, rows, 1}).eq(sample_block.unsqueeze(1));  // [G, rows, s]
    }
    common::PartialAttention res = common::attend_with_lse(
        q_rows, gather_rows(k3, samples), gather_rows(v3, samples), scale, drop_res);
    res.lse.add_(std::log(static_cast<double>(nk) / static_cast<double>(s)));
    merged = common::lse_merge({blk, res});
  }

  // 4. Back to the original query order.
  at::Tensor row_of_query = at::take(ql.row_of_position, invert(q_order));  // [G, Nq]
  HyperAttentionResult result;
  result.output = gather_rows(merged.out, row_of_query).view({batch, heads, nq, dv});
  result.lse = gather_rows(merged.lse.unsqueeze(2), row_of_query).view({batch, heads, nq});
  return result;
}

at::Tensor hyperattention_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    double scale, const HyperAttentionOptions& options,
                                    const AttentionCall& call) {
  return hyperattention_with_lse(q, k, v, scale, options, call).output;
}

}  // namespace kdeserve::attention::hyperattention
