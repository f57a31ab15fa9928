// The attention() entry point: validation, dispatch, fallback reporting.
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <limits>
#include <set>
#include <string>

#include "attention/attention.h"
#include "attention/kdeformer/fused.h"
#include "attention/device.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

TEST(AttentionApi, RejectsBadRanks) {
  const at::Tensor x = at::randn({2, 3, 4});
  EXPECT_THROW(attention(x, x, x), c10::Error);
  try {
    attention(x, x, x);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("4-D [B, H, N, D]"), std::string::npos);
  }
}

TEST(AttentionApi, RejectsMismatchedShapes) {
  const at::Tensor q = at::randn({1, 2, 5, 8});
  EXPECT_THROW(attention(q, at::randn({1, 2, 5, 7}), at::randn({1, 2, 5, 8})), c10::Error);
  EXPECT_THROW(attention(q, at::randn({1, 2, 6, 8}), at::randn({1, 2, 5, 8})), c10::Error);
  EXPECT_THROW(attention(q, at::randn({2, 2, 5, 8}), at::randn({2, 2, 5, 8})), c10::Error);
  EXPECT_THROW(attention(q, at::randn({1, 3, 5, 8}), at::randn({1, 3, 5, 8})), c10::Error);
  EXPECT_THROW(attention(q, at::randn({1, 2, 0, 8}), at::randn({1, 2, 0, 8})), c10::Error);
}

TEST(AttentionApi, RejectsBadDtypes) {
  const at::Tensor q = at::randn({1, 1, 4, 4});
  EXPECT_THROW(attention(q, q.to(at::kDouble), q), c10::Error);
  const at::Tensor i = at::ones({1, 1, 4, 4}, at::kInt);
  EXPECT_THROW(attention(i, i, i), c10::Error);
}

TEST(AttentionApi, RejectsMismatchedDevices) {
  const at::Tensor q = at::randn({1, 1, 4, 4});
  const at::Tensor meta = at::empty({1, 1, 4, 4}, at::TensorOptions().device(at::kMeta));
  try {
    attention(q, meta, q);
    FAIL() << "expected a device error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("devices differ"), std::string::npos) << e.what();
  }
}

TEST(AttentionApi, RejectsNonFiniteOrInvalidOptions) {
  const at::Tensor q = at::randn({1, 1, 8, 4});
  EXPECT_THROW(attention(q, q, q, AttentionOptions().scale(std::nan(""))), c10::Error);
  EXPECT_THROW(
      attention(q, q, q, AttentionOptions().scale(std::numeric_limits<double>::infinity())),
      c10::Error);
  auto kde = AttentionOptions(Method::kKdeformer);
  EXPECT_THROW(attention(q, q, q, kde.scale(-1.0)), c10::Error);
  kde = AttentionOptions(Method::kKdeformer);
  kde.kdeformer().bucket_size(0);
  EXPECT_THROW(attention(q, q, q, kde), c10::Error);
  kde.kdeformer().bucket_size(2).sample_size(-1);
  EXPECT_THROW(attention(q, q, q, kde), c10::Error);
  kde.kdeformer().sample_size(2).num_projections(0);
  EXPECT_THROW(attention(q, q, q, kde), c10::Error);
  kde.kdeformer().num_projections(3).heavy(false).sample_size(0);
  EXPECT_THROW(attention(q, q, q, kde), c10::Error);
}

TEST(AttentionApi, ReportsWhatRan) {
  const at::Tensor q = seeded_randn({2, 3, 40, 8}, 1, at::kFloat);
  const at::Tensor v = seeded_randn({2, 3, 40, 5}, 2, at::kFloat);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  auto options = AttentionOptions(Method::kKdeformer);
  options.kdeformer().bucket_size(8).sample_size(4);
  const at::Tensor out = attention(q, q, v, options, call);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 40, 5}));
  EXPECT_EQ(report.requested, Method::kKdeformer);
  EXPECT_EQ(report.ran, Method::kKdeformer);
  EXPECT_FALSE(report.fell_back);
  // float32 on the CPU: the fused kernel (KdeformerKernel::kAuto).
  EXPECT_EQ(report.backend, kdeformer::fused_backend_name());
  EXPECT_EQ(report.backend.rfind("fused-", 0), 0u) << report.backend;
  EXPECT_EQ(report.batch, 2);
  EXPECT_EQ(report.heads, 3);
  EXPECT_EQ(report.num_queries, 40);
  EXPECT_EQ(report.num_keys, 40);
  EXPECT_EQ(report.head_dim, 8);
  EXPECT_EQ(report.value_dim, 5);
  EXPECT_EQ(report.num_blocks, 5);
  EXPECT_EQ(report.block_keys, 8);
  EXPECT_EQ(report.sample_size, 4);
  EXPECT_GT(report.seconds, 0.0);
}

TEST(AttentionApi, BucketCoveringAllKeysFallsBackToExactWithReason) {
  const at::Tensor q = seeded_randn({1, 2, 30, 8}, 3);
  const at::Tensor k = seeded_randn({1, 2, 20, 8}, 4);
  const at::Tensor v = seeded_randn({1, 2, 20, 6}, 5);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  auto options = AttentionOptions(Method::kKdeformer);
  options.kdeformer().bucket_size(20).sample_size(16);
  const at::Tensor out = attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kExact);
  EXPECT_TRUE(report.fell_back);
  EXPECT_NE(report.reason.find("bucket_size 20 >= Nk 20"), std::string::npos) << report.reason;
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 1 / std::sqrt(8.0))), 1e-12);
}

TEST(AttentionApi, HalfPrecisionComputesInFloat32) {
  const at::Tensor q = seeded_randn({1, 1, 16, 8}, 6, at::kHalf);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  const at::Tensor out = attention(q, q, q, AttentionOptions(), call);
  EXPECT_EQ(out.scalar_type(), at::kHalf);
  EXPECT_TRUE(report.fell_back);
  EXPECT_NE(report.reason.find("float32"), std::string::npos);
  EXPECT_LT(max_rel_diff(out, naive_attention(q, q, q, 1 / std::sqrt(8.0))), 2e-3);
}

TEST(AttentionApi, DefaultScaleIsInverseSqrtHeadDim) {
  const at::Tensor q = seeded_randn({1, 1, 10, 16}, 7);
  const at::Tensor out = attention(q, q, q);
  EXPECT_LT(max_rel_diff(out, naive_attention(q, q, q, 0.25)), 1e-12);
  EXPECT_DOUBLE_EQ(resolve_scale(AttentionOptions(), 16), 0.25);
  EXPECT_DOUBLE_EQ(resolve_scale(AttentionOptions().scale(2.0), 16), 2.0);
}

TEST(AttentionApi, MethodNamesRoundTrip) {
  std::set<std::string> names;
  for (const Method m : kAllMethods) {
    EXPECT_EQ(method_from_string(to_string(m)), m);
    names.insert(to_string(m));
  }
  EXPECT_EQ(names.size(), std::size(kAllMethods));
  EXPECT_EQ(to_string(Method::kScatterBrain), "scatterbrain");
  EXPECT_THROW(method_from_string("Performer"), c10::Error);
  EXPECT_THROW(method_from_string("flash"), c10::Error);
  EXPECT_EQ(bucket_order_from_string("reference"), BucketOrder::kReference);
}

TEST(AttentionApi, CudaInfoMatchesTheBuild) {
  const CudaInfo info = cuda_info();
  if (info.compiled) {
    EXPECT_GT(info.runtime_version, 0);
    EXPECT_NE(info.message.find("CUDA runtime"), std::string::npos);
  } else {
    EXPECT_EQ(info.device_count, 0);
    EXPECT_NE(info.message.find("without CUDA"), std::string::npos);
  }
}

}  // namespace
}  // namespace kdeserve::attention
