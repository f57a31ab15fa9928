#include "attention/options.h"

#include <c10/util/Exception.h>

namespace kdeserve::attention {

std::string to_string(Method method) {
  switch (method) {
    case Method::kExact:
      return "exact";
    case Method::kKdeformer:
      return "kdeformer";
    case Method::kPerformer:
      return "performer";
    case Method::kReformer:
      return "reformer";
    case Method::kScatterBrain:
      return "scatterbrain";
    case Method::kHyperAttention:
      return "hyperattention";
    case Method::kWildCat:
      return "wildcat";
    case Method::kThinformer:
      return "thinformer";
  }
  return "unknown";
}

std::string to_string(BucketOrder order) {
  return order == BucketOrder::kGray ? "gray" : "reference";
}

std::string to_string(Residual residual) {
  switch (residual) {
    case Residual::kSampled:
      return "sampled";
    case Residual::kControlVariate:
      return "control_variate";
    case Residual::kMassCalibrated:
      return "mass_calibrated";
    case Residual::kCoreset:
      return "coreset";
    case Residual::kFittedFarField:
      return "fitted_far_field";
  }
  return "?";
}

std::string to_string(Sampling sampling) {
  return sampling == Sampling::kValueNorm ? "value_norm" : "uniform";
}

std::string to_string(ExactBackend backend) {
  switch (backend) {
    case ExactBackend::kAuto:
      return "auto";
    case ExactBackend::kChunked:
      return "chunked";
    case ExactBackend::kSdpa:
      return "sdpa";
  }
  return "unknown";
}

std::string to_string(KdeformerKernel kernel) {
  switch (kernel) {
    case KdeformerKernel::kAuto:
      return "auto";
    case KdeformerKernel::kAten:
      return "aten";
    case KdeformerKernel::kFused:
      return "fused";
  }
  return "unknown";
}

KdeformerKernel kdeformer_kernel_from_string(const std::string& name) {
  if (name == "auto") return KdeformerKernel::kAuto;
  if (name == "aten") return KdeformerKernel::kAten;
  if (name == "fused") return KdeformerKernel::kFused;
  TORCH_CHECK(false, "unknown KDEformer kernel '", name, "' (expected auto, aten or fused)");
}

ExactBackend exact_backend_from_string(const std::string& name) {
  if (name == "auto") return ExactBackend::kAuto;
  if (name == "chunked") return ExactBackend::kChunked;
  if (name == "sdpa") return ExactBackend::kSdpa;
  TORCH_CHECK(false, "unknown exact attention backend '", name, "' (expected auto, chunked or sdpa)");
}

Method method_from_string(const std::string& name) {
  std::string expected;
  for (const Method m : kAllMethods) {
    if (name == to_string(m)) return m;
    expected += (expected.empty() ? "" : ", ") + to_string(m);
  }
  TORCH_CHECK(false, "unknown attention method '", name, "' (expected one of ", expected, ")");
}

BucketOrder bucket_order_from_string(const std::string& name) {
  if (name == "gray") return BucketOrder::kGray;
  if (name == "reference") return BucketOrder::kReference;
  TORCH_CHECK(false, "unknown bucket order '", name, "' (expected gray or reference)");
}

Residual residual_from_string(const std::string& name) {
  if (name == "sampled") return Residual::kSampled;
  if (name == "control_variate") return Residual::kControlVariate;
  if (name == "mass_calibrated") return Residual::kMassCalibrated;
  if (name == "coreset") return Residual::kCoreset;
  if (name == "fitted_far_field") return Residual::kFittedFarField;
  TORCH_CHECK(false, "unknown KDEformer residual '", name,
              "' (expected sampled, control_variate, mass_calibrated, coreset or "
              "fitted_far_field)");
}

}  // namespace kdeserve::attention
