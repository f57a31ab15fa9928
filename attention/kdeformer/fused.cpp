#include "attention/kdeformer/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/kdeformer/far_field.h"
#include "attention/kdeformer/fused_kernel.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/kdeformer/lsh.h"
#include "attention/kdeformer/sampling.h"

#ifdef KDESERVE_WITH_CUDA
#include "attention/kdeformer/fused_cuda.h"
#endif

namespace kdeserve::attention::kdeformer {

namespace {

std::string cpu_unsupported_reason(const at::Tensor& q, const KdeformerOptions& options) {
  if (q.scalar_type() != at::kFloat) {
    return std::string("the fused kernel computes float32 only, got ") +
           c10::toString(q.scalar_type());
  }
  if (!options.heavy()) return "the fused kernel needs the heavy block part";
  if (options.residual() != Residual::kSampled &&
      options.residual() != Residual::kControlVariate) {
    return "the fused kernel has no " + to_string(options.residual()) + " residual";
  }
  return {};
}

}  // namespace

std::string fused_unsupported_reason(const at::Tensor& q, const at::Tensor& v,
                                     const KdeformerOptions& options) {
  if (q.is_cuda()) {
#ifdef KDESERVE_WITH_CUDA
    return fused_cuda_unsupported_reason(q, v, options);
#else
    (void)v;
    return "this build has no CUDA kernels (KDESERVE_WITH_CUDA=OFF)";
#endif
  }
  if (!q.is_cpu()) return "the fused kernel runs on the CPU and on CUDA only";
  return cpu_unsupported_reason(q, options);
}

void set_kernel_inputs(KernelInputs& in, const at::Tensor& q3, const at::Tensor& k3,
                       const at::Tensor& v3, const at::Tensor& q_order, const at::Tensor& k_order,
                       double scale, int64_t blocks, int64_t samples) {
  in.groups = q3.size(0);
  in.nq = q3.size(1);
  in.nk = k3.size(1);
  in.dim = q3.size(2);
  in.dv = v3.size(2);
  in.samples = samples;
  in.blocks = blocks;
  in.scale = static_cast<float>(scale);
  in.q = q3.data_ptr<float>();
  in.k = k3.data_ptr<float>();
  in.v = v3.data_ptr<float>();
  in.q_order = q_order.data_ptr<int64_t>();
  in.k_order = k_order.data_ptr<int64_t>();
}

std::string fused_backend_name() {
  return std::string("fused-") + kernel::isa_name(kernel::best_isa()) + "-cpu";
}

std::string fused_backend_name(const at::Tensor& q) {
  return q.is_cuda() ? "fused-cuda" : fused_backend_name();
}

at::Tensor kdeformer_fused_attention(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, double scale,
                                     const KdeformerOptions& options, const AttentionCall& call) {
#ifdef KDESERVE_WITH_CUDA
  if (q.is_cuda()) return kdeformer_fused_cuda_attention(q, k, v, scale, options, call);
#endif
  return kdeformer_fused_attention(q, k, v, scale, options, call, kernel::best_isa());
}

at::Tensor kdeformer_fused_attention(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, double scale,
                                     const KdeformerOptions& opt, const AttentionCall& call,
                                     kernel::Isa isa) {
  const std::vector<kernel::Isa> runs = kernel::supported_isas();
  TORCH_CHECK(std::find(runs.begin(), runs.end(), isa) != runs.end(),
              "kdeformer fused kernel: this CPU does not run the ", kernel::isa_name(isa),
              " variant");
  TORCH_CHECK(q.is_cpu(), "kdeformer fused kernel: the ", kernel::isa_name(isa),
              " variant runs on the CPU only");
  const std::string unsupported = cpu_unsupported_reason(q, opt);
  TORCH_CHECK(unsupported.empty(), "kdeformer fused kernel: ", unsupported);
  check_options(opt);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  const int64_t m = opt.sample_size();
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());
  const at::Tensor q3 = q.reshape({groups, nq, dim}).contiguous();
  const at::Tensor k3 = k.reshape({groups, nk, dim}).contiguous();
  const at::Tensor v3 = v.reshape({groups, nk, dv}).contiguous();

  // Alg. 3 step 1: the hyperplanes as the ATen path draws them; the ranks are hashed below by
  // the loop the ATen path also uses on the CPU, so both sort every item into the same bucket.
  const at::Tensor proj = lsh_projections(batch, heads, dim, opt.num_projections(),
                                          q.scalar_type(), q.device(), call);  // [G, D, r]
  const at::Tensor proj_c = proj.contiguous();
  const at::Tensor table = bucket_order_table(opt.num_projections(), opt.bucket_order());
  const int64_t blocks = (nk + opt.bucket_size() - 1) / opt.bucket_size();
  const std::vector<int64_t> q_start = common::balanced_starts(nq, blocks);
  const std::vector<int64_t> k_start = common::balanced_starts(nk, blocks);

  // Alg. 3 step 2's samples, drawn as the ATen path draws them.
  at::Tensor samples, weights;
  if (m > 0) {
    const ResidualSamples drawn = draw_residual_samples(v3, batch, heads, opt, call);
    samples = drawn.indices;  // [G, m]
    weights = drawn.weights;
  }

  const at::TensorOptions index_options = q3.options().dtype(at::kLong);
  at::Tensor q_order = at::empty({groups, nq}, index_options);
  at::Tensor k_order = at::empty({groups, nk}, index_options);
  at::Tensor sample_block = at::empty({groups, m}, index_options);
  at::Tensor value_min, value_max;
  if (opt.clamp_output()) {
    value_min = at::empty({groups, dv}, q3.options());
    value_max = at::empty({groups, dv}, q3.options());
  }
  {
    const int64_t r = opt.num_projections(), buckets = int64_t{1} << r;
    const float* pp = proj_c.data_ptr<float>();
    const int64_t* tp = table.data_ptr<int64_t>();
    // Hashing, in chunks of rows so that one (entry, head) spreads over every thread.
    constexpr int64_t kChunk = 512;
    const int64_t q_chunks = (nq + kChunk - 1) / kChunk, k_chunks = (nk + kChunk - 1) / kChunk;
    const int64_t chunks = q_chunks + k_chunks;
    at::Tensor ranks = at::empty({groups, nq + nk}, index_options);
    int64_t* rk = ranks.data_ptr<int64_t>();
    at::parallel_for(0, groups * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task / chunks, c = task % chunks;
        const bool is_q = c < q_chunks;
        const int64_t n = is_q ? nq : nk, first = (is_q ? c : c - q_chunks) * kChunk;
        const float* x = (is_q ? q3 : k3).data_ptr<float>() + (g * n + first) * dim;
        int64_t* out = rk + g * (nq + nk) + (is_q ? 0 : nq) + first;
        kernel::hash_ranks(x, std::min(kChunk, n - first), dim, pp + g * dim * r, r, tp, out);
      }
    });
    const int64_t* si = m > 0 ? samples.data_ptr<int64_t>() : nullptr;
    const float* vp = v3.data_ptr<float>();
    int64_t* qo = q_order.data_ptr<int64_t>();
    int64_t* ko = k_order.data_ptr<int64_t>();
    int64_t* sb = sample_block.data_ptr<int64_t>();
    float* vmin = opt.clamp_output() ? value_min.data_ptr<float>() : nullptr;
    float* vmax = opt.clamp_output() ? value_max.data_ptr<float>() : nullptr;
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> block_of_key(nk);
      for (int64_t g = begin; g < end; ++g) {
        kernel::counting_sort(rk + g * (nq + nk), nq, buckets, qo + g * nq);
        kernel::counting_sort(rk + g * (nq + nk) + nq, nk, buckets, ko + g * nk);
        for (int64_t j = 0; j < blocks; ++j) {
          for (int64_t p = k_start[j]; p < k_start[j + 1]; ++p) block_of_key[ko[g * nk + p]] = j;
        }
        for (int64_t s = 0; s < m; ++s) sb[g * m + s] = block_of_key[si[g * m + s]];
        if (vmin != nullptr) {
          // The values' range per coordinate, for clamp_output.
          float* lo = vmin + g * dv;
          float* hi = vmax + g * dv;
          std::copy(vp + g * nk * dv, vp + g * nk * dv + dv, lo);
          std::copy(vp + g * nk * dv, vp + g * nk * dv + dv, hi);
          for (int64_t j = 1; j < nk; ++j) {
            const float* row = vp + (g * nk + j) * dv;
            for (int64_t e = 0; e < dv; ++e) {
              lo[e] = std::min(lo[e], row[e]);
              hi[e] = std::max(hi[e], row[e]);
            }
          }
        }
      }
    });
  }

  kernel::Problem pb;
  set_kernel_inputs(pb, q3, k3, v3, q_order, k_order, scale, blocks, m);
  pb.q_start = q_start.data();
  pb.k_start = k_start.data();

  at::Tensor sample_keys, sample_values;
  if (m > 0) {
    sample_keys = at::empty({groups, dim * kernel::panel_width(m)}, q3.options());
    sample_values = at::empty({groups, m * kernel::panel_width(dv)}, q3.options());
    pb.sample_index = samples.data_ptr<int64_t>();
    pb.sample_weight = weights.data_ptr<float>();
    pb.sample_block = sample_block.data_ptr<int64_t>();
    pb.sample_keys = sample_keys.data_ptr<float>();
    pb.sample_values = sample_values.data_ptr<float>();
  }
  at::Tensor ff_moments, ff_value_sum;
  if (opt.residual() == Residual::kControlVariate) {
    // The [G, D, D + Dv + 1] moments only; the kernel applies them to each tile of queries,
    // so nothing [G, Nq, ·] is allocated for the far field.
    const FarFieldMoments fm = far_field_moment_matrix(k3, v3);
    ff_moments = at::zeros({groups, dim, kernel::panel_width(dim + dv + 1)}, q3.options());
    ff_moments.narrow(2, 0, dim + dv + 1).copy_(fm.matrix);
    ff_value_sum = fm.value_sum.reshape({groups, dv}).contiguous();
    pb.ff_moments = ff_moments.data_ptr<float>();
    pb.ff_value_sum = ff_value_sum.data_ptr<float>();
  }
  if (opt.clamp_output()) {
    pb.value_min = value_min.data_ptr<float>();
    pb.value_max = value_max.data_ptr<float>();
  }
  at::Tensor out = at::empty({groups, nq, dv}, q3.options());
  pb.out = out.data_ptr<float>();

  if (m > 0) {
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      kernel::pack_samples(pb, begin, end, isa);
    });
  }
  at::parallel_for(0, groups * blocks, 1, [&](int64_t begin, int64_t end) {
    kernel::run_tasks(pb, begin, end, isa);
  });

  if (call.report != nullptr) {
    int64_t widest = 0;
    for (int64_t j = 0; j < blocks; ++j) widest = std::max(widest, k_start[j + 1] - k_start[j]);
    call.report->num_blocks = blocks;
    call.report->block_keys = widest;
    call.report->sample_size = m;
  }
  return out.view({batch, heads, nq, dv});
}

}  // namespace kdeserve::attention::kdeformer
