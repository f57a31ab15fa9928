#pragma once
/// The one entry point of the attention library.

#include <ATen/core/Tensor.h>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention {

/// Multi-head attention of q against (k, v) with the method in `options`.
///
/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv], same dtype and device.
/// float32 and float64 compute natively; float16/bfloat16 compute in float32 and are cast back.
/// The single switch over method × device lives here; when a method cannot or need not run
/// (e.g. KDEformer with bucket_size ≥ Nk, which is exact attention), the call falls back and
/// says why in `call.report`. Throws c10::Error on bad ranks, shapes, dtypes, devices or options.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {}, const AttentionCall& call = {});

/// Validates the inputs and options exactly as attention() does (throws c10::Error).
void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const AttentionOptions& options);

/// The softmax scale a call uses: options.scale() or 1/sqrt(D).
double resolve_scale(const AttentionOptions& options, int64_t head_dim);

}  // namespace kdeserve::attention
