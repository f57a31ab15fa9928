#include "attention/kdeformer/fused_cuda.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "attention/kdeformer/fused_cuda_kernel.h"

namespace kdeserve::attention::kdeformer {

std::string fused_cuda_unsupported_reason(const at::Tensor& q, const at::Tensor& v,
                                          const KdeformerOptions& options) {
  if (!q.is_cuda()) return "the fused CUDA kernel runs on CUDA tensors only";
  std::string reason = fused_cuda_input_reason(q, v, options);
  if (!reason.empty()) return reason;
  const c10::cuda::CUDAGuard guard(q.device());
  return cuda_kernel::unsupported_reason(q.size(3), v.size(3));
}

at::Tensor kdeformer_fused_cuda_attention(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, double scale,
                                          const KdeformerOptions& opt, const AttentionCall& call) {
  const std::string unsupported = fused_cuda_unsupported_reason(q, v, opt);
  TORCH_CHECK(unsupported.empty(), "kdeformer fused CUDA kernel: ", unsupported);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), nk = k.size(2);
  const int64_t dv = v.size(3);
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());
  const FusedCudaInputs in = fused_cuda_inputs(q, k, v, scale, opt, call);
  const std::string error =
      cuda_kernel::launch(in.problem, c10::cuda::getCurrentCUDAStream(q.get_device()).stream());
  TORCH_CHECK(error.empty(), "kdeformer fused CUDA kernel: launch failed: ", error);
  if (call.report != nullptr) {
    const int64_t blocks = in.problem.blocks;
    call.report->num_blocks = blocks;
    call.report->block_keys = (nk + blocks - 1) / blocks;
    call.report->sample_size = opt.sample_size();
  }
  return in.out.view({batch, heads, nq, dv});
}

}  // namespace kdeserve::attention::kdeformer
