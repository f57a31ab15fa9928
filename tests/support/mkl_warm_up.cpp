// Linked into every GoogleTest binary (kdeserve_add_test): before the first test, one threaded
// GEMM (float32, float64) and one threaded float64 exp, so that the tests' first tensor math does
// not run on MKL's first threaded calls of the process. Those can take another path than every
// later call when the machine is busy (measured: a T2T-ViT forward 1.2e-6 off the next one in
// ~4% of fresh processes under `ctest -j2`), which made tests that compare two results bit for
// bit flaky; what they check (same seeds, same plan, another batch position give the same
// result) is a property of this project's code, not of MKL's thread start-up.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace {

class MklWarmUp : public ::testing::Environment {
 public:
  void SetUp() override {
    for (at::ScalarType t : {at::kFloat, at::kDouble}) {
      const at::Tensor a = at::ones({512, 512}, at::TensorOptions(t));
      at::mm(a, a);
      at::bmm(a.view({8, 128, 256}), a.view({8, 256, 128}));
    }
    at::exp(at::zeros({1 << 17}, at::kDouble));
  }
};

const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(new MklWarmUp);

}  // namespace
