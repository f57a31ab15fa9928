// KDEformer properties beyond the reference code (issue: §4 a–f, and the bucket orders).
#include <gtest/gtest.h>

#include <cmath>

#include "attention/attention.h"
#include "attention/exact.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/kdeformer/lsh.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_randn;

// The estimate written densely from its pieces (which blocks, which samples, which weights):
// an independent check of the blocked, padded, sorted implementation. float64.
at::Tensor dense_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale, const KdeformerParts& parts, bool heavy) {
  at::Tensor s = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-2, -1)).mul_(scale);
  at::Tensor a = (s - std::get<0>(s.max(-1, true))).exp_();  // [B, H, Nq, Nk]
  at::Tensor vd = v.to(at::kDouble);
  at::Tensor num = at::zeros({q.size(0), q.size(1), q.size(2), v.size(3)}, vd.options());
  at::Tensor den = at::zeros({q.size(0), q.size(1), q.size(2)}, vd.options());
  const at::Tensor& qb = parts.query_block;  // [B, H, Nq]
  if (heavy) {
    at::Tensor same = qb.unsqueeze(-1).eq(parts.key_block.unsqueeze(-2)).to(at::kDouble);
    num += at::matmul(a * same, vd);
    den += (a * same).sum(-1);
  }
  if (parts.sample_indices.defined()) {
    const at::Tensor& idx = parts.sample_indices;  // [B, H, m]
    const int64_t m = idx.size(2);
    at::Tensor w = parts.sample_probabilities.to(at::kDouble).gather(2, idx).mul(m).reciprocal();
    at::Tensor a_s = a.gather(3, idx.unsqueeze(2).expand({-1, -1, q.size(2), -1}));  // [B,H,Nq,m]
    at::Tensor keep = at::ones_like(a_s);
    if (heavy) {
      keep = qb.unsqueeze(-1).ne(parts.key_block.gather(2, idx).unsqueeze(-2)).to(at::kDouble);
    }
    at::Tensor weight = a_s * keep * w.unsqueeze(2);
    at::Tensor v_s = vd.gather(2, idx.unsqueeze(-1).expand({-1, -1, -1, v.size(3)}));
    num += at::matmul(weight, v_s);
    den += weight.sum(-1);
  }
  return num / den.unsqueeze(-1);
}

// Block sizes are balanced (differ by at most one, never above the bucket size) and blocks are
// contiguous runs of the hash order, for every (entry, head).
void expect_balanced_hash_blocks(const at::Tensor& x, const at::Tensor& block, int64_t blocks,
                                 const at::Tensor& ranks) {
  const int64_t groups = block.size(0) * block.size(1), n = block.size(2);
  at::Tensor b2 = block.reshape({groups, n}), r2 = ranks.reshape({groups, n});
  for (int64_t g = 0; g < groups; ++g) {
    at::Tensor counts = at::bincount(b2[g], {}, blocks);
    EXPECT_LE(counts.max().item<int64_t>() - counts.min().item<int64_t>(), 1);
    EXPECT_EQ(counts.sum().item<int64_t>(), n);
    for (int64_t j = 0; j + 1 < blocks; ++j) {
      at::Tensor here = r2[g].masked_select(b2[g].eq(j));
      at::Tensor next = r2[g].masked_select(b2[g].eq(j + 1));
      if (here.numel() && next.numel()) {
        EXPECT_LE(here.max().item<int64_t>(), next.min().item<int64_t>());
      }
    }
  }
}

TEST(BucketOrder, GrayAndReferenceTablesForThreeBits) {
  // kdeformer.md §2.6 a: walking buckets by rank visits 0,1,3,2,6,7,5,4 (true Gray) but
  // 0,1,3,2,7,6,4,5 with the reference lookup.
  const at::Tensor gray = at::argsort(bucket_order_table(3, BucketOrder::kGray));
  const at::Tensor ref = at::argsort(bucket_order_table(3, BucketOrder::kReference));
  EXPECT_TRUE(gray.equal(at::tensor({0, 1, 3, 2, 6, 7, 5, 4}, at::kLong)));
  EXPECT_TRUE(ref.equal(at::tensor({0, 1, 3, 2, 7, 6, 4, 5}, at::kLong)));
  // In true Gray order every pair of neighbouring buckets differs in exactly one bit.
  const at::Tensor seq = at::argsort(bucket_order_table(7, BucketOrder::kGray));
  for (int64_t i = 0; i + 1 < 128; ++i) {
    EXPECT_EQ(__builtin_popcountll(seq[i].item<int64_t>() ^ seq[i + 1].item<int64_t>()), 1);
  }
}

struct Sizes {
  int64_t batch, heads, nq, nk, d, dv, bucket, samples;
};

class KdeformerShapes : public ::testing::TestWithParam<Sizes> {};

// (a) any Nq, Nk (not multiples of the bucket size) and (b) Nq ≠ Nk, Dv ≠ D: the blocked,
// padded implementation equals the dense formula of the same estimate, blocks are balanced runs
// of the hash order within each (entry, head).
TEST_P(KdeformerShapes, EqualsDenseFormulaOfTheSameEstimate) {
  const Sizes z = GetParam();
  const at::Tensor q = seeded_randn({z.batch, z.heads, z.nq, z.d}, 31);
  const at::Tensor k = seeded_randn({z.batch, z.heads, z.nk, z.d}, 32);
  const at::Tensor v = seeded_randn({z.batch, z.heads, z.nk, z.dv}, 33);
  const double scale = 1 / std::sqrt(static_cast<double>(z.d));
  for (bool heavy : {true, false}) {
    if (!heavy && z.samples == 0) continue;
    auto opt = KdeformerOptions().bucket_size(z.bucket).sample_size(z.samples).heavy(heavy);
    if (!heavy) opt.sampling(Sampling::kUniform);
    AttentionCall call;
    call.seed = 7;
    call.injected.projections = seeded_randn({z.d, 7}, 34);
    const KdeformerParts parts = kdeformer_parts(q, k, v, scale, opt, call);
    const at::Tensor out = kdeformer_attention(q, k, v, scale, opt, call);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{z.batch, z.heads, z.nq, z.dv}));
    EXPECT_TRUE(out.equal(parts.output));
    EXPECT_LT(max_rel_diff(out, dense_estimate(q, k, v, scale, parts, heavy)), 1e-12);
    if (heavy) {
      const int64_t blocks = (z.nk + z.bucket - 1) / z.bucket;
      const at::Tensor proj = call.injected.projections->unsqueeze(0).expand(
          {z.batch * z.heads, z.d, 7});
      const auto rk = bucket_ranks(k.reshape({-1, z.nk, z.d}), proj, BucketOrder::kGray);
      const auto rq = bucket_ranks(q.reshape({-1, z.nq, z.d}), proj, BucketOrder::kGray);
      expect_balanced_hash_blocks(k, parts.key_block, blocks, rk);
      expect_balanced_hash_blocks(q, parts.query_block, blocks, rq);
      EXPECT_LE(at::bincount(parts.key_block.reshape({-1, z.nk})[0]).max().item<int64_t>(),
                z.bucket);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AnySizes, KdeformerShapes,
    ::testing::Values(Sizes{1, 1, 64, 64, 8, 8, 16, 8},      // divisible, as the reference
                      Sizes{3, 2, 101, 77, 8, 5, 16, 8},     // nothing divisible
                      Sizes{2, 1, 784, 784, 16, 16, 32, 24},  // T2T layer 2: 784 / 32 = 24.5
                      Sizes{1, 2, 300, 75, 8, 20, 16, 12},   // Nq = 4 Nk, Dv > D
                      Sizes{2, 1, 5, 50, 4, 3, 8, 4},        // fewer queries than blocks
                      Sizes{1, 1, 33, 33, 6, 6, 4, 0}),      // block-only
    [](const ::testing::TestParamInfo<Sizes>& info) {
      const Sizes& z = info.param;
      return "B" + std::to_string(z.batch) + "H" + std::to_string(z.heads) + "Nq" +
             std::to_string(z.nq) + "Nk" + std::to_string(z.nk) + "D" + std::to_string(z.d) +
             "Dv" + std::to_string(z.dv) + "b" + std::to_string(z.bucket) + "m" +
             std::to_string(z.samples);
    });

// (a) No mixing across batch entries or heads: changing one entry or head leaves every other
// one bit-identical (the reference mixes images when Nk is not a multiple of the bucket size).
TEST(Kdeformer, EntriesAndHeadsNeverMix) {
  const at::Tensor q = seeded_randn({3, 2, 784, 16}, 41, at::kFloat);
  const at::Tensor k = seeded_randn({3, 2, 784, 16}, 42, at::kFloat);
  const at::Tensor v = seeded_randn({3, 2, 784, 16}, 43, at::kFloat);
  auto options = AttentionOptions(Method::kKdeformer);
  options.kdeformer().bucket_size(32).sample_size(24);
  const at::Tensor base = attention(q, k, v, options);
  at::Tensor q2 = q.clone(), k2 = k.clone(), v2 = v.clone();
  q2[1].mul_(3.0);
  k2[1].add_(1.0);
  v2[1].neg_();
  const at::Tensor changed = attention(q2, k2, v2, options);
  EXPECT_TRUE(changed[0].equal(base[0]));
  EXPECT_TRUE(changed[2].equal(base[2]));
  EXPECT_FALSE(changed[1].equal(base[1]));
  // Only head 1 of entry 0 changes: head 0 of entry 0 and every other entry stay identical.
  at::Tensor v3 = v.clone();
  v3[0][1].mul_(-2.0);
  const at::Tensor one_head = attention(q, k, v3, options);
  EXPECT_TRUE(one_head[0][0].equal(base[0][0]));
  EXPECT_FALSE(one_head[0][1].equal(base[0][1]));
  EXPECT_TRUE(one_head.narrow(0, 1, 2).equal(base.narrow(0, 1, 2)));
}

// (b) The BigGAN shape: 4096 queries, 1024 keys, D = 64, Dv = 256.
TEST(Kdeformer, BigGanShape) {
  const at::Tensor q = seeded_randn({1, 1, 4096, 64}, 51, at::kFloat).mul_(0.3);
  const at::Tensor k = seeded_randn({1, 1, 1024, 64}, 52, at::kFloat).mul_(0.3);
  const at::Tensor v = seeded_randn({1, 1, 1024, 256}, 53, at::kFloat);
  const auto opt = KdeformerOptions().bucket_size(64).sample_size(128);
  AttentionCall call;
  call.seed = 3;
  const KdeformerParts parts = kdeformer_parts(q, k, v, 1.0, opt, call);
  EXPECT_EQ(parts.output.sizes(), (std::vector<int64_t>{1, 1, 4096, 256}));
  EXPECT_EQ(at::bincount(parts.query_block.flatten()).min().item<int64_t>(), 256);
  EXPECT_EQ(at::bincount(parts.key_block.flatten()).max().item<int64_t>(), 64);
  EXPECT_LT(max_rel_diff(parts.output, dense_estimate(q, k, v, 1.0, parts, true)), 1e-4);
}

// (c) Logits up to 200: the float32 estimate matches the float64 one (the reference's
// unshifted exp overflows float32 above 88).
TEST(Kdeformer, Float32MatchesFloat64AtLogitsUpTo200) {
  at::Tensor q = seeded_randn({2, 1, 300, 16}, 61);
  q = q / q.norm(2, {-1}, true) * std::sqrt(200.0);
  const at::Tensor k = q.flip({2}).contiguous();
  const at::Tensor v = seeded_randn({2, 1, 300, 8}, 62);
  const double max_logit = at::matmul(q, k.transpose(-2, -1)).max().item<double>();
  ASSERT_GT(max_logit, 150.0);
  ASSERT_LE(max_logit, 200.0 + 1e-9);
  const auto opt = KdeformerOptions().bucket_size(32).sample_size(40);
  AttentionCall call;
  call.injected.projections = seeded_randn({16, 7}, 63);
  call.injected.sample_indices = at::randint(300, {2, 1, 40}, at::detail::createCPUGenerator(64),
                                             at::TensorOptions(at::kLong));
  call.injected.power_init = seeded_randn({9}, 65);
  const at::Tensor out64 = kdeformer_attention(q, k, v, 1.0, opt, call);
  const at::Tensor out32 =
      kdeformer_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), 1.0, opt, call);
  EXPECT_TRUE(at::isfinite(out32).all().item<bool>());
  EXPECT_LT(max_rel_diff(out32, out64), 1e-4);
}

// (d) Deterministic for a seed; different seeds differ; an entry's output does not depend on
// its neighbours or on its position when it carries its own seed.
TEST(Kdeformer, DeterministicAndIndependentOfTheBatch) {
  const at::Tensor x = seeded_randn({3, 2, 200, 16}, 71, at::kFloat);
  const at::Tensor v = seeded_randn({3, 2, 200, 16}, 72, at::kFloat);
  auto options = AttentionOptions(Method::kKdeformer);
  options.kdeformer().bucket_size(32).sample_size(32);
  AttentionCall call;
  call.seed = 99;
  const at::Tensor a = attention(x, x, v, options, call);
  EXPECT_TRUE(a.equal(attention(x, x, v, options, call)));
  call.seed = 100;
  EXPECT_FALSE(a.equal(attention(x, x, v, options, call)));

  // Entry 0 alone, with neighbours, and moved to the end of a batch with per-entry seeds.
  call.seed = 99;
  call.entry_seeds = {5};
  const at::Tensor alone = attention(x.narrow(0, 0, 1), x.narrow(0, 0, 1), v.narrow(0, 0, 1),
                                     options, call);
  const at::Tensor x_moved = at::cat({x.narrow(0, 1, 2), x.narrow(0, 0, 1)});
  const at::Tensor v_moved = at::cat({v.narrow(0, 1, 2), v.narrow(0, 0, 1)});
  call.entry_seeds = {8, 9, 5};
  const at::Tensor moved = attention(x_moved, x_moved, v_moved, options, call);
  EXPECT_TRUE(moved[2].equal(alone[0]));
}

// (e) One block covering every key is exact attention, for any m (every sample is masked).
TEST(Kdeformer, SingleBlockIsExact) {
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 81);
  const at::Tensor k = seeded_randn({2, 2, 50, 8}, 82);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 83);
  for (int64_t m : {0, 16}) {
    const auto opt = KdeformerOptions().bucket_size(50).sample_size(m);
    EXPECT_LT(max_rel_diff(kdeformer_attention(q, k, v, 0.4, opt), naive_attention(q, k, v, 0.4)),
              1e-13);
  }
}

// (e) m = 0 is the block-diagonal estimate: a softmax restricted to each query's block.
TEST(Kdeformer, NoSamplesIsBlockLocalSoftmax) {
  const at::Tensor q = seeded_randn({1, 2, 90, 8}, 84);
  const at::Tensor v = seeded_randn({1, 2, 90, 4}, 85);
  const auto opt = KdeformerOptions().bucket_size(16).sample_size(0);
  const KdeformerParts parts = kdeformer_parts(q, q, v, 0.5, opt);
  at::Tensor s = at::matmul(q, q.transpose(-2, -1)).mul_(0.5);
  at::Tensor same = parts.query_block.unsqueeze(-1).eq(parts.key_block.unsqueeze(-2));
  at::Tensor expected = at::matmul(at::softmax(s.masked_fill(same.logical_not(), -INFINITY), -1), v);
  EXPECT_LT(max_rel_diff(parts.output, expected), 1e-13);
  EXPECT_TRUE(at::equal(parts.residual_denominator, at::zeros_like(parts.residual_denominator)));
}

// (f) No Nq × Nk tensor: peak extra memory grows linearly in n (O(Nq (b + m))).
TEST(Kdeformer, PeakMemoryIsLinearInSequenceLength) {
  auto options = AttentionOptions(Method::kKdeformer);
  options.kdeformer().bucket_size(64).sample_size(128);
  int64_t previous = 0;
  for (int64_t n : {16384, 32768}) {
    const at::Tensor q = at::randn({1, 1, n, 64});
    const at::Tensor v = at::randn({1, 1, n, 64});
    PeakMemoryScope scope;
    const at::Tensor out = attention(q, q, v, options);
    const int64_t peak = scope.peak_bytes();
    const int64_t dense = n * n * 4;
    const int64_t linear_bound = 8 * n * (64 + 128 + 64 + 64) * 4;
    EXPECT_LT(peak, linear_bound) << "n=" << n;
    EXPECT_LT(peak, dense / 16) << "n=" << n;
    if (previous > 0) {
      EXPECT_LT(static_cast<double>(peak) / previous, 2.5);
    }
    previous = peak;
  }
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
