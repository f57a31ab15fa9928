#include <gtest/gtest.h>

#include "attention/spectral_norm.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention {
namespace {

using kdeserve::testing::seeded_randn;

TEST(SpectralNorm, MatchesLargestSingularValue) {
  const at::Tensor x = seeded_randn({300, 40}, 301);
  const double expected = at::linalg_svdvals(x).max().item<double>();
  EXPECT_NEAR(spectral_norm(x).item<double>(), expected, 1e-8 * expected);
  const at::Tensor batch = seeded_randn({3, 20, 50}, 302);
  const at::Tensor norms = spectral_norm(batch);
  ASSERT_EQ(norms.sizes(), (std::vector<int64_t>{3}));
  for (int64_t i = 0; i < 3; ++i) {
    const double e = at::linalg_svdvals(batch[i]).max().item<double>();
    EXPECT_NEAR(norms[i].item<double>(), e, 1e-8 * e);
  }
}

TEST(SpectralNorm, RelativeErrorOfAKnownPerturbation) {
  const at::Tensor a = at::diag(at::tensor({4.0, 2.0, 1.0}, at::kDouble));
  const at::Tensor b = a + at::diag(at::tensor({0.0, 0.0, 0.5}, at::kDouble));
  EXPECT_NEAR(relative_spectral_error(b, a), 0.125, 1e-12);
  EXPECT_THROW(relative_spectral_error(a, at::zeros({2, 2}, at::kDouble)), c10::Error);
}

}  // namespace
}  // namespace kdeserve::attention
