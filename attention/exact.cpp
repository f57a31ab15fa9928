#include "attention/exact.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace kdeserve::attention {

at::Tensor exact_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const ExactOptions& options) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  at::Tensor out = at::empty({batch, heads, nq, dv}, v.options());
  if (nq == 0) return out;
  TORCH_CHECK(options.max_chunk_elements() >= 1, "exact: max_chunk_elements must be >= 1");

  at::Tensor q3 = q.reshape({groups, nq, dim}).mul(scale);           // [G, Nq, D]
  at::Tensor kt = k.reshape({groups, nk, dim}).transpose(1, 2);      // [G, D, Nk]
  at::Tensor v3 = v.reshape({groups, nk, dv}).contiguous();          // [G, Nk, Dv]
  at::Tensor out3 = out.view({groups, nq, dv});
  // Chunks never span (entry, head) groups: each is one large GEMM pair, which keeps BLAS
  // efficient when there are many groups with short sequences.
  const int64_t chunk = std::clamp<int64_t>(options.max_chunk_elements() / nk, 1, nq);

  // Buffers reused by every chunk: scores and probabilities are the only O(chunk · Nk) memory.
  at::Tensor score_buf = at::empty({chunk * nk}, q3.options());
  at::Tensor prob_buf = at::empty({chunk * nk}, q3.options());
  for (int64_t g = 0; g < groups; ++g) {
    const at::Tensor qg = q3[g], ktg = kt[g], vg = v3[g];
    at::Tensor og = out3[g];
    for (int64_t start = 0; start < nq; start += chunk) {
      const int64_t len = std::min(chunk, nq - start);
      at::Tensor s = score_buf.narrow(0, 0, len * nk).view({len, nk});
      at::Tensor p = prob_buf.narrow(0, 0, len * nk).view({len, nk});
      at::mm_out(s, qg.narrow(0, start, len), ktg);
      // ATen's fused row softmax subtracts the row max: finite for logits of any size.
      at::_softmax_out(p, s, /*dim=*/1, /*half_to_float=*/false);
      at::Tensor rows = og.narrow(0, start, len);  // contiguous rows of the output
      at::mm_out(rows, p, vg);
    }
  }
  return out;
}

}  // namespace kdeserve::attention
