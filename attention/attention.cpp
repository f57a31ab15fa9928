#include "attention/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "attention/exact.h"
#include "attention/hyperattention/hyperattention.h"
#include "attention/kdeformer/calibration.h"
#include "attention/kdeformer/fused.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/performer/performer.h"
#include "attention/reformer/reformer.h"
#include "attention/scatterbrain/scatterbrain.h"
#include "attention/sdpa.h"
#include "attention/thinformer/thinformer.h"
#include "attention/wildcat/wildcat.h"

namespace kdeserve::attention {
namespace {

std::string device_name(const at::Tensor& x) {
  return x.is_cuda() ? "cuda" : (x.is_cpu() ? "cpu" : x.device().str());
}

std::string backend_name(const at::Tensor& x) { return "aten-" + device_name(x); }

// Why KDEformer should not run on these inputs (empty: it should).
std::string kdeformer_skip_reason(const KdeformerOptions& opt, int64_t nk) {
  if (opt.heavy() && opt.bucket_size() >= nk) {
    return "bucket_size " + std::to_string(opt.bucket_size()) + " >= Nk " + std::to_string(nk) +
           ": one block holds every key, so KDEformer is exact attention";
  }
  return {};
}

void append_reason(std::string& why, const std::string& reason) {
  why = why.empty() ? reason : why + "; " + reason;
}

// Whether ExactBackend::kAuto takes SDPA: wherever SDPA has a fused kernel for the inputs. On
// CPU (LibTorch 2.11) its flash kernel was measured faster than the chunked path at every shape
// it supports (attention_bench: 72–76% of sgemm against 50–63%; bench/RESULTS.md); on CUDA the
// fused kernels never hold Nq × Nk scores while the chunked path does (scripts/gpu_check.sh
// measures both).
bool auto_prefers_sdpa(const SdpaChoice& choice) { return choice.fused; }

// Exact attention on the backend `options` asks for; sets report.backend and appends the reason
// to `why` when a requested backend cannot run.
at::Tensor run_exact(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     const ExactOptions& options, AttentionReport& report, std::string& why) {
  if (options.backend() != ExactBackend::kChunked) {
    const SdpaChoice choice = sdpa_choice(q, k, v, scale);
    if (choice.fused &&
        (options.backend() == ExactBackend::kSdpa || auto_prefers_sdpa(choice))) {
      report.backend = "sdpa-" + choice.kernel + "-" + device_name(q);
      return sdpa_attention(q, k, v, scale);
    }
    if (options.backend() == ExactBackend::kSdpa) {
      append_reason(why, "exact backend sdpa unavailable: " + choice.reason + "; ran chunked");
    }
  }
  report.backend = backend_name(q);
  return exact_attention(q, k, v, scale, options);
}

// KDEformer on the implementation `options` asks for; sets report.backend and appends the reason
// to `why` when the fused kernel was asked for and cannot run.
at::Tensor run_kdeformer_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale, const KdeformerOptions& options,
                                  const AttentionCall& call, AttentionReport& report,
                                  std::string& why) {
  // kAuto takes the fused kernel on the CPU, where it is measured faster at every benchmark
  // shape (bench/RESULTS.md); the CUDA kernel runs when asked for (kFused) until it has been
  // measured on a GPU (scripts/gpu_check.sh; bench/RESULTS.md "CUDA").
  const bool wanted = options.kernel() == KdeformerKernel::kFused ||
                      (options.kernel() == KdeformerKernel::kAuto && q.is_cpu());
  if (wanted) {
    const std::string unsupported = kdeformer::fused_unsupported_reason(q, v, options);
    if (unsupported.empty()) {
      report.backend = kdeformer::fused_backend_name(q);
      return kdeformer::kdeformer_fused_attention(q, k, v, scale, options, call);
    }
    if (options.kernel() == KdeformerKernel::kFused) {
      append_reason(why, "kdeformer fused kernel unavailable: " + unsupported + "; ran aten");
    }
  }
  report.backend = backend_name(q);
  return kdeformer::kdeformer_attention(q, k, v, scale, options, call);
}

// The estimate of either implementation, then its calibration (the same ATen step for both).
at::Tensor run_kdeformer(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         double scale, const KdeformerOptions& options, const AttentionCall& call,
                         AttentionReport& report, std::string& why) {
  at::Tensor out = run_kdeformer_estimate(q, k, v, scale, options, call, report, why);
  if (options.calibration_rows() == 0 || q.size(2) == 0) return out;
  report.calibration_rows = std::min(options.calibration_rows(), q.size(2));
  return kdeformer::calibrate_to_mean(out, q, k, v, scale, options.calibration_rows(),
                                      options.clamp_output(), call);
}

}  // namespace

double resolve_scale(const AttentionOptions& options, int64_t head_dim) {
  return options.scale() ? *options.scale() : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const AttentionOptions& options) {
  TORCH_CHECK(q.defined() && k.defined() && v.defined(), "attention: q, k and v must be defined");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "attention: q, k, v must be 4-D [B, H, N, D]; got ranks ", q.dim(), ", ", k.dim(),
              ", ", v.dim());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
                  q.size(1) == v.size(1),
              "attention: batch and head sizes must match: q ", q.sizes(), ", k ", k.sizes(),
              ", v ", v.sizes());
  TORCH_CHECK(q.size(3) == k.size(3), "attention: q and k head dims differ: ", q.size(3), " vs ",
              k.size(3));
  TORCH_CHECK(k.size(2) == v.size(2), "attention: k and v sequence lengths differ: ", k.size(2),
              " vs ", v.size(2));
  TORCH_CHECK(k.size(2) >= 1, "attention: needs at least one key");
  TORCH_CHECK(q.size(3) >= 1 && v.size(3) >= 1, "attention: head dims must be >= 1");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "attention: q, k, v dtypes differ: ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  const auto dtype = q.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "attention: dtype must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(),
              "attention: q, k, v devices differ: ", q.device(), ", ", k.device(), ", ",
              v.device());
  if (options.scale()) {
    TORCH_CHECK(std::isfinite(*options.scale()), "attention: scale must be finite, got ",
                *options.scale());
  }
  if (options.method() != Method::kExact) {
    // The kernel methods take sqrt(scale) or hash directions that a negative scale would flip.
    TORCH_CHECK(!options.scale() || *options.scale() > 0, "attention: ",
                to_string(options.method()), " needs a positive scale, got ", *options.scale());
  }
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options, const AttentionCall& call) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(q, k, v, options);
  const double scale = resolve_scale(options, q.size(3));
  AttentionReport local;
  AttentionReport& report = call.report != nullptr ? *call.report : local;
  report = AttentionReport{};
  report.requested = options.method();
  report.backend = backend_name(q);
  report.batch = q.size(0);
  report.heads = q.size(1);
  report.num_queries = q.size(2);
  report.num_keys = k.size(2);
  report.head_dim = q.size(3);
  report.value_dim = v.size(3);

  // Reduced precision computes in float32 (exp and long sums need it) and is cast back.
  const bool widen = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const at::Tensor qc = widen ? q.to(at::kFloat) : q;
  const at::Tensor kc = widen ? k.to(at::kFloat) : k;
  const at::Tensor vc = widen ? v.to(at::kFloat) : v;
  std::string why;
  if (widen) why = std::string("computed in float32 for ") + c10::toString(q.scalar_type());

  // An approximate method runs unless it says why it would be exact on these sizes; then the
  // exact path runs and the report says why.
  at::Tensor out;
  AttentionCall inner = call;
  inner.report = &report;
  const auto approximate = [&](Method method, const std::string& exact_why, auto&& run) {
    if (exact_why.empty()) {
      report.ran = method;
      out = run();
    } else {
      report.ran = Method::kExact;
      append_reason(why, exact_why);
      out = run_exact(qc, kc, vc, scale, options.exact(), report, why);
    }
  };
  const int64_t nq = q.size(2), nk = k.size(2);
  switch (options.method()) {
    case Method::kExact:
      report.ran = Method::kExact;
      out = run_exact(qc, kc, vc, scale, options.exact(), report, why);
      break;
    case Method::kKdeformer:
      approximate(Method::kKdeformer, kdeformer_skip_reason(options.kdeformer(), nk), [&] {
        return run_kdeformer(qc, kc, vc, scale, options.kdeformer(), inner, report, why);
      });
      break;
    case Method::kPerformer:
      approximate(Method::kPerformer, performer::exact_reason(options.performer(), nq, nk), [&] {
        return performer::performer_attention(qc, kc, vc, scale, options.performer(), inner);
      });
      break;
    case Method::kReformer:
      approximate(Method::kReformer, reformer::exact_reason(options.reformer(), nq, nk), [&] {
        return reformer::reformer_attention(qc, kc, vc, scale, options.reformer(), inner);
      });
      break;
    case Method::kScatterBrain:
      approximate(Method::kScatterBrain,
                  scatterbrain::exact_reason(options.scatterbrain(), nq, nk), [&] {
                    return scatterbrain::scatterbrain_attention(qc, kc, vc, scale,
                                                                options.scatterbrain(), inner);
                  });
      break;
    case Method::kHyperAttention:
      approximate(Method::kHyperAttention,
                  hyperattention::exact_reason(options.hyperattention(), nq, nk), [&] {
                    return hyperattention::hyperattention_attention(
                        qc, kc, vc, scale, options.hyperattention(), inner);
                  });
      break;
    case Method::kWildCat:
      approximate(Method::kWildCat, wildcat::exact_reason(options.wildcat(), nq, nk), [&] {
        return wildcat::wildcat_attention(qc, kc, vc, scale, options.wildcat(), inner);
      });
      break;
    case Method::kThinformer:
      approximate(Method::kThinformer, thinformer::exact_reason(options.thinformer(), nq, nk),
                  [&] {
                    return thinformer::thinformer_attention(qc, kc, vc, scale,
                                                            options.thinformer(), inner);
                  });
      break;
  }
  report.fell_back = !why.empty();
  report.reason = why;
  if (widen) out = out.to(q.scalar_type());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace kdeserve::attention
