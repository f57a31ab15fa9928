// Reproduces the reference KDEformer on real GloVe vectors with its randomness injected
// (../shared/fixtures/kdeformer_glove.safetensors; fixtures/README.md §3).
#include <gtest/gtest.h>

#include <cmath>

#include "attention/exact.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/kdeformer/lsh.h"
#include "attention/kdeformer/sampling.h"
#include "attention/spectral_norm.h"
#include "models/weights/safetensors.h"
#include "tests/attention/test_util.h"
#include "tests/support/shared_data.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::max_rel_diff;

class KdeformerGloveFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = kdeserve::testing::shared_file("fixtures/kdeformer_glove.safetensors");
    if (path.empty()) {
      GTEST_SKIP() << "fixture missing: " << kdeserve::testing::shared_dir()
                   << "/fixtures/kdeformer_glove.safetensors (set KDESERVE_SHARED_DIR)";
    }
    file_ = std::make_unique<models::SafetensorsFile>(models::SafetensorsFile::open(path));
    // Q = K = float64(rows) / 10^{1/4}, V = float64(rows); batch 1, one head; no extra scale.
    q_ = get("glove_qk_rows").to(at::kDouble).div_(std::pow(10.0, 0.25)).view({1, 1, 2048, 100});
    v_ = get("glove_v_rows").to(at::kDouble).view({1, 1, 2048, 100});
    call_.injected.projections = get("proj");
    call_.injected.power_init = get("power_init");
    call_.injected.sample_indices = get("sample_idx");
  }
  at::Tensor get(const std::string& name) const { return file_->get(name); }
  KdeformerOptions options(int64_t samples) const {
    return KdeformerOptions()
        .num_projections(7)
        .bucket_size(64)
        .sample_size(samples)
        .power_iterations(20)
        .bucket_order(BucketOrder::kReference);
  }

  std::unique_ptr<models::SafetensorsFile> file_;
  at::Tensor q_, v_;
  AttentionCall call_;
};

TEST_F(KdeformerGloveFixture, HashesAndStableSortMatch) {
  const at::Tensor proj = get("proj").unsqueeze(0);
  const at::Tensor ranks = bucket_ranks(q_.view({1, 2048, 100}), proj, BucketOrder::kReference);
  EXPECT_TRUE(ranks[0].equal(get("hash")));
  EXPECT_TRUE(hash_sort(ranks)[0].equal(get("sort_idx")));
  EXPECT_TRUE(bucket_order_table(7, BucketOrder::kReference).equal(get("lsh_perm")));
}

TEST_F(KdeformerGloveFixture, PowerMethodAndSamplingProbabilities) {
  const at::Tensor lambda =
      power_method_lambda(v_.view({1, 2048, 100}), get("power_init").unsqueeze(0), 20);
  EXPECT_NEAR(lambda.item<double>(), get("lambda").item<double>(),
              1e-12 * get("lambda").item<double>());
  const KdeformerParts parts = kdeformer_parts(q_, q_, v_, 1.0, options(256), call_);
  EXPECT_LT(max_rel_diff(parts.sample_probabilities[0][0], get("sample_prob")), 1e-12);
}

TEST_F(KdeformerGloveFixture, EstimateWith256SamplesMatches) {
  const KdeformerParts parts = kdeformer_parts(q_, q_, v_, 1.0, options(256), call_);
  const double diff = max_rel_diff(parts.output[0][0], get("out_kdeformer"));
  std::cout << "m=256: max|out - golden| / max|golden| = " << diff << "\n";
  EXPECT_LT(diff, 1e-9);
  const at::Tensor denominator =
      (parts.block_denominator + parts.residual_denominator) * parts.shift.exp();
  EXPECT_LT(max_rel_diff(denominator[0][0], get("denominator")), 1e-9);
  const at::Tensor out = kdeformer_attention(q_, q_, v_, 1.0, options(256), call_);
  EXPECT_LT(max_rel_diff(out[0][0], get("out_kdeformer")), 1e-9);
  // The fixture's spectral relative error, 0.328987.
  EXPECT_NEAR(relative_spectral_error(out[0][0], get("out_exact")), 0.328987, 5e-6);
}

TEST_F(KdeformerGloveFixture, BlockOnlyEstimateMatches) {
  const KdeformerParts parts = kdeformer_parts(q_, q_, v_, 1.0, options(0), call_);
  const double diff = max_rel_diff(parts.output[0][0], get("out_kdeformer_s0"));
  std::cout << "m=0: max|out - golden| / max|golden| = " << diff << "\n";
  EXPECT_LT(diff, 1e-9);
  const at::Tensor denominator = parts.block_denominator * parts.shift.exp();
  EXPECT_LT(max_rel_diff(denominator[0][0], get("denominator_s0")), 1e-9);
  EXPECT_NEAR(relative_spectral_error(parts.output[0][0], get("out_exact")), 0.501393, 5e-6);
}

TEST_F(KdeformerGloveFixture, Float32WithTheSameInjectionsIsClose) {
  const at::Tensor q32 = q_.to(at::kFloat), v32 = v_.to(at::kFloat);
  const at::Tensor out = kdeformer_attention(q32, q32, v32, 1.0, options(256), call_);
  const double diff = max_rel_diff(out[0][0], get("out_kdeformer"));
  std::cout << "float32: max|out - golden| / max|golden| = " << diff << "\n";
  EXPECT_LT(diff, 1e-4);
}

TEST_F(KdeformerGloveFixture, ExactMatches) {
  EXPECT_LT(max_rel_diff(exact_attention(q_, q_, v_, 1.0)[0][0], get("out_exact")), 1e-12);
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
