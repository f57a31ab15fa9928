#include <ATen/ATen.h>

#include <tuple>

#include "attention/common/blocks.h"
#include "attention/kdeformer/far_field.h"
#include "attention/kdeformer/fused.h"
#include "attention/kdeformer/fused_cuda.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/kdeformer/lsh.h"
#include "attention/kdeformer/sampling.h"

namespace kdeserve::attention::kdeformer {

std::string fused_cuda_input_reason(const at::Tensor& q, const at::Tensor& v,
                                    const KdeformerOptions& options) {
  if (q.scalar_type() != at::kFloat) {
    return std::string("the fused kernel computes float32 only, got ") +
           c10::toString(q.scalar_type());
  }
  if (!options.heavy()) return "the fused kernel needs the heavy block part";
  if (options.residual() != Residual::kSampled && options.residual() != Residual::kControlVariate) {
    return "the fused kernel has no " + to_string(options.residual()) + " residual";
  }
  if (v.size(3) > cuda_kernel::kCudaMaxDv) {
    return "the fused CUDA kernel takes value dims up to " +
           std::to_string(cuda_kernel::kCudaMaxDv) + ", got " + std::to_string(v.size(3));
  }
  return {};
}

FusedCudaInputs fused_cuda_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale, const KdeformerOptions& opt,
                                  const AttentionCall& call) {
  const std::string unsupported = fused_cuda_input_reason(q, v, opt);
  TORCH_CHECK(unsupported.empty(), "kdeformer fused CUDA kernel: ", unsupported);
  check_options(opt);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  const int64_t m = opt.sample_size();
  TORCH_CHECK(nq >= 1 && dv >= 1, "kdeformer fused CUDA kernel: needs Nq, Dv >= 1");
  FusedCudaInputs in;
  in.q = q.reshape({groups, nq, dim}).contiguous();
  in.k = k.reshape({groups, nk, dim}).contiguous();
  in.v = v.reshape({groups, nk, dv}).contiguous();

  // Alg. 3 step 1 as the ATen path runs it: the same hyperplanes, ranks and stable sort, so
  // both paths cut the same diagonal blocks.
  const at::Tensor proj = lsh_projections(batch, heads, dim, opt.num_projections(), q.scalar_type(),
                                          q.device(), call);  // [G, D, r]
  in.q_order = hash_sort(bucket_ranks(in.q, proj, opt.bucket_order())).contiguous();
  in.k_order = hash_sort(bucket_ranks(in.k, proj, opt.bucket_order())).contiguous();

  cuda_kernel::Problem& pb = in.problem;
  set_kernel_inputs(pb, in.q, in.k, in.v, in.q_order, in.k_order, scale,
                    (nk + opt.bucket_size() - 1) / opt.bucket_size(), m);

  // Alg. 3 step 2's samples, drawn as the ATen path draws them; each sample's sorted position
  // tells the kernel which block holds it exactly.
  if (m > 0) {
    const ResidualSamples drawn = draw_residual_samples(in.v, batch, heads, opt, call);
    in.samples = drawn.indices;  // [G, m]
    in.weights = drawn.weights;
    in.positions = common::invert_permutation(in.k_order).gather(1, in.samples).contiguous();
    pb.sample_index = in.samples.data_ptr<int64_t>();
    pb.sample_weight = in.weights.data_ptr<float>();
    pb.sample_position = in.positions.data_ptr<int64_t>();
  }
  if (opt.residual() == Residual::kControlVariate) {
    // Each query's q_iᵀ [Cov(K) | Σ_j (k_j − k̄) v_jᵀ | k̄] by one batched product (far_field.h).
    const FarFieldMoments fm = far_field_moment_matrix(in.k, in.v);
    in.query_moments = at::bmm(in.q * scale, fm.matrix).contiguous();  // [G, Nq, D + Dv + 1]
    in.value_sum = fm.value_sum.reshape({groups, dv}).contiguous();
    pb.query_moments = in.query_moments.data_ptr<float>();
    pb.value_sum = in.value_sum.data_ptr<float>();
  }
  if (opt.clamp_output()) {
    std::tie(in.value_min, in.value_max) = at::aminmax(in.v, 1);
    in.value_min = in.value_min.contiguous();
    in.value_max = in.value_max.contiguous();
    pb.value_min = in.value_min.data_ptr<float>();
    pb.value_max = in.value_max.data_ptr<float>();
  }
  in.out = at::empty({groups, nq, dv}, in.q.options());
  pb.out = in.out.data_ptr<float>();
  return in;
}

}  // namespace kdeserve::attention::kdeformer
