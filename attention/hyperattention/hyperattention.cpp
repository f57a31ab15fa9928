#include "attention/hyperattention/hyperattention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/common/lse_merge.h"
#include "attention/kdeformer/lsh.h"
#include "attention/random.h"

namespace kdeserve::attention::hyperattention {
namespace {

using common::gather_rows;

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
  const std::vector<int64_t> k_start = common::fixed_starts(nk, b);
  const common::BlockLayout kl =
      common::block_layout(k_start, q.device(), opt.mask_padding() ? 0 : b);
  const common::BlockLayout ql =
      common::block_layout(common::proportional_starts(k_start, nq), q.device());
  const int64_t kw = kl.width, qw = ql.width, rows = blocks * qw;
  at::Tensor q_rows = gather_rows(q3, common::items_of_rows(ql, q_order));  // [G, rows, D]
  at::Tensor k_idx = common::items_of_rows(kl, k_order);                    // [G, blocks·kw]
  at::Tensor k_blk = gather_rows(k3, k_idx);                                // [G, blocks·kw, D]
  at::Tensor v_blk = gather_rows(v3, k_idx);
  at::Tensor drop_blk;
  if (opt.mask_padding()) {
    drop_blk = kl.row_valid.logical_not()
                   .view({1, blocks, 1, kw})
                   .expand({groups, blocks, 1, kw})
                   .reshape({groups * blocks, 1, kw});
  } else {
    // The reference's zero rows: logit 0, value 0, counted in the softmax.
    at::Tensor row_pad = kl.row_valid.logical_not().view({1, -1, 1});
    k_blk.masked_fill_(row_pad, 0);
    v_blk.masked_fill_(row_pad, 0);
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
      at::Tensor sample_block = common::blocks_of_items(kl, k_order).gather(1, samples);  // [G, s]
      at::Tensor row_block = at::arange(blocks, samples.options()).repeat_interleave(qw);
      drop_res = row_block.view({1, rows, 1}).eq(sample_block.unsqueeze(1));  // [G, rows, s]
    }
    common::PartialAttention res = common::attend_with_lse(
        q_rows, gather_rows(k3, samples), gather_rows(v3, samples), scale, drop_res);
    res.lse.add_(std::log(static_cast<double>(nk) / static_cast<double>(s)));
    merged = common::lse_merge({blk, res});
  }

  // 4. Back to the original query order.
  at::Tensor row_of_query = common::rows_of_items(ql, q_order);  // [G, Nq]
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
