// HyperAttention (attention/hyperattention): the estimate against an independent dense formula,
// its limits, unbiasedness, padding modes, numerics, batch independence, and parity with the
// reference insuhan/hyper-attn @ 68b91e9b (fixtures/hyperattention_parity.safetensors, written
// by tools/peer_fixtures/gen_hyperattention.py).
#include "attention/hyperattention/hyperattention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/kdeformer/lsh.h"
#include "models/weights/safetensors.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention::hyperattention {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_randn;

// The estimate written densely (float64, full Nq × Nk) from the documented rules: sorted
// positions by kdeformer's sortLSH, key block = position / b, query block by the proportional
// split, samples given as original key indices. Returns {out, lse}.
std::pair<at::Tensor, at::Tensor> dense_estimate(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, double scale,
                                                 const HyperAttentionOptions& opt,
                                                 const at::Tensor& proj,
                                                 const at::Tensor& samples) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), nk = k.size(2);
  const int64_t d = q.size(3), b = opt.block_size(), blocks = (nk + b - 1) / b;
  const int64_t groups = batch * heads;
  at::Tensor p = proj.dim() == 2 ? proj.unsqueeze(0).expand({groups, d, proj.size(1)}) : proj;
  at::Tensor qd = q.to(at::kDouble).reshape({groups, nq, d});
  at::Tensor kd = k.to(at::kDouble).reshape({groups, nk, d});
  at::Tensor vd = v.to(at::kDouble).reshape({groups, nk, -1});
  at::Tensor pd = p.to(at::kDouble);
  at::Tensor q_sorted = kdeformer::hash_sort(kdeformer::bucket_ranks(qd, pd, opt.bucket_order()));
  at::Tensor k_sorted = kdeformer::hash_sort(kdeformer::bucket_ranks(kd, pd, opt.bucket_order()));
  std::vector<at::Tensor> outs, lses;
  for (int64_t g = 0; g < groups; ++g) {
    at::Tensor kblock = at::empty({nk}, at::kLong), qblock = at::empty({nq}, at::kLong);
    for (int64_t pos = 0; pos < nk; ++pos) kblock[k_sorted[g][pos].item<int64_t>()] = pos / b;
    for (int64_t pos = 0; pos < nq; ++pos) {
      int64_t j = 0;
      while (j + 1 < blocks && std::min((j + 1) * b, nk) * nq / nk <= pos) ++j;
      qblock[q_sorted[g][pos].item<int64_t>()] = j;
    }
    at::Tensor e = at::matmul(qd[g], kd[g].t()).mul_(scale).exp_();  // [Nq, Nk]
    at::Tensor same = qblock.unsqueeze(1).eq(kblock.unsqueeze(0)).to(at::kDouble);
    at::Tensor num = at::matmul(e * same, vd[g]);
    at::Tensor den = (e * same).sum(1);
    if (!opt.mask_padding()) {
      // b·blocks − Nk zero keys in the last block: e^0 each in the denominator.
      den += qblock.eq(blocks - 1).to(at::kDouble) * static_cast<double>(b * blocks - nk);
    }
    if (opt.sample_size() > 0 && blocks > 1) {
      at::Tensor idx = samples.dim() == 1 ? samples : samples.reshape({groups, -1})[g];
      const double w = static_cast<double>(nk) / static_cast<double>(idx.size(0));
      at::Tensor es = e.index_select(1, idx) * w;  // [Nq, s]
      if (opt.deduplicate()) {
        es *= qblock.unsqueeze(1).ne(kblock.index_select(0, idx).unsqueeze(0)).to(at::kDouble);
      }
      num += at::matmul(es, vd[g].index_select(0, idx));
      den += es.sum(1);
    }
    outs.push_back(num / den.unsqueeze(1));
    lses.push_back(den.log());
  }
  return {at::stack(outs).view({batch, heads, nq, -1}), at::stack(lses).view({batch, heads, nq})};
}

AttentionCall injected_call(int64_t d, int64_t r, int64_t nk, int64_t s, uint64_t seed) {
  AttentionCall call;
  call.injected.projections = seeded_randn({d, r}, seed);
  call.injected.sample_indices =
      at::randint(nk, {s}, at::detail::createCPUGenerator(seed + 1), at::TensorOptions(at::kLong));
  return call;
}

struct Sizes {
  int64_t batch, heads, nq, nk, d, dv, block, samples;
};

class HyperAttentionShapes : public ::testing::TestWithParam<Sizes> {};

// Any Nq, Nk (odd, Nq ≠ Nk, fewer queries than blocks), Dv ≠ D, every padding and de-dup mode:
// the blocked, sorted, LSE-merged implementation equals the dense formula of the same estimate.
TEST_P(HyperAttentionShapes, EqualsDenseFormulaOfTheSameEstimate) {
  const Sizes z = GetParam();
  const at::Tensor q = seeded_randn({z.batch, z.heads, z.nq, z.d}, 11);
  const at::Tensor k = seeded_randn({z.batch, z.heads, z.nk, z.d}, 12);
  const at::Tensor v = seeded_randn({z.batch, z.heads, z.nk, z.dv}, 13);
  const double scale = 0.7;
  AttentionCall call = injected_call(z.d, 3, z.nk, z.samples, 14);
  for (bool mask : {true, false}) {
    for (bool dedup : {true, false}) {
      const auto opt = HyperAttentionOptions()
                           .block_size(z.block)
                           .sample_size(z.samples)
                           .num_projections(3)
                           .mask_padding(mask)
                           .deduplicate(dedup);
      const HyperAttentionResult got = hyperattention_with_lse(q, k, v, scale, opt, call);
      const auto [out, lse] = dense_estimate(q, k, v, scale, opt, *call.injected.projections,
                                             *call.injected.sample_indices);
      EXPECT_EQ(got.output.sizes(), (std::vector<int64_t>{z.batch, z.heads, z.nq, z.dv}));
      EXPECT_LT(max_rel_diff(got.output, out), 1e-12) << "mask " << mask << " dedup " << dedup;
      EXPECT_LT((got.lse - lse).abs().max().item<double>(), 1e-12);
      EXPECT_TRUE(got.output.equal(hyperattention_attention(q, k, v, scale, opt, call)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AnySizes, HyperAttentionShapes,
    ::testing::Values(Sizes{1, 1, 64, 64, 8, 8, 16, 8},     // divisible
                      Sizes{2, 2, 101, 77, 8, 5, 16, 9},    // nothing divisible, Dv < D
                      Sizes{1, 2, 300, 75, 6, 20, 16, 12},  // Nq = 4 Nk, Dv > D
                      Sizes{2, 1, 3, 50, 4, 3, 8, 5},       // fewer queries than blocks
                      Sizes{1, 1, 33, 33, 6, 6, 4, 0}),     // block-only
    [](const ::testing::TestParamInfo<Sizes>& info) {
      const Sizes& z = info.param;
      return "B" + std::to_string(z.batch) + "H" + std::to_string(z.heads) + "Nq" +
             std::to_string(z.nq) + "Nk" + std::to_string(z.nk) + "Dv" + std::to_string(z.dv) +
             "b" + std::to_string(z.block) + "s" + std::to_string(z.samples);
    });

// b ≥ Nk (masked): one block holds every key and the residual is skipped: exact attention.
TEST(HyperAttention, OneBlockIsExact) {
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 21);
  const at::Tensor k = seeded_randn({2, 2, 50, 8}, 22);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 23);
  for (int64_t b : {50, 64}) {
    const auto opt = HyperAttentionOptions().block_size(b).sample_size(16);
    EXPECT_LT(
        max_rel_diff(hyperattention_attention(q, k, v, 0.4, opt), naive_attention(q, k, v, 0.4)),
        1e-13);
    EXPECT_FALSE(exact_reason(HyperAttentionOptions(opt).min_seq_len(0), 70, 50).empty());
  }
  // Unmasked padding (the reference) is not exact when b > Nk: 14 zero keys join the block.
  const auto ref = HyperAttentionOptions().block_size(64).sample_size(16).mask_padding(false);
  EXPECT_TRUE(exact_reason(HyperAttentionOptions(ref).min_seq_len(0), 70, 50).empty());
  EXPECT_GT(
      max_rel_diff(hyperattention_attention(q, k, v, 0.4, ref), naive_attention(q, k, v, 0.4)),
      1e-3);
}

// s = 0: block-diagonal only; every query's lse is the log of its block's partition function.
TEST(HyperAttention, NoSamplesIsBlockOnly) {
  const at::Tensor q = seeded_randn({1, 2, 90, 8}, 24);
  const at::Tensor v = seeded_randn({1, 2, 90, 4}, 25);
  AttentionCall call = injected_call(8, 7, 90, 1, 26);
  const auto opt = HyperAttentionOptions().block_size(16).sample_size(0);
  const HyperAttentionResult got = hyperattention_with_lse(q, q, v, 0.5, opt, call);
  const auto [out, lse] = dense_estimate(q, q, v, 0.5, opt, *call.injected.projections, {});
  EXPECT_LT(max_rel_diff(got.output, out), 1e-13);
  AttentionReport report;
  call.report = &report;
  hyperattention_attention(q, q, v, 0.5, opt, call);
  EXPECT_EQ(report.num_blocks, 6);
  EXPECT_EQ(report.block_keys, 16);
  EXPECT_EQ(report.sample_size, 0);
}

// Padding: with Nk mod b ≠ 0 the reference's zero keys add exactly e^0 = 1 per pad to the
// partition function of the last block's queries (and shrink their output); masked, they add
// nothing. With b | Nk both modes agree bit for bit.
TEST(HyperAttention, PaddingMaskedVersusReferenceUnmasked) {
  const at::Tensor q = seeded_randn({1, 1, 90, 8}, 27);
  const at::Tensor v = seeded_randn({1, 1, 90, 4}, 28);
  AttentionCall call = injected_call(8, 7, 90, 1, 29);
  const auto masked = HyperAttentionOptions().block_size(16).sample_size(0);
  const auto unmasked = HyperAttentionOptions(masked).mask_padding(false);
  const HyperAttentionResult m = hyperattention_with_lse(q, q, v, 0.5, masked, call);
  const HyperAttentionResult u = hyperattention_with_lse(q, q, v, 0.5, unmasked, call);
  const at::Tensor extra = u.lse.exp() - m.lse.exp();  // 0 or 6 (= 96 − 90 pads)
  const at::Tensor is_last = extra.gt(3);
  EXPECT_LT((extra - is_last.to(at::kDouble) * 6).abs().max().item<double>(), 1e-9);
  EXPECT_EQ(is_last.sum().item<int64_t>(), 10);  // the last block's share: 90 − 80 queries
  const at::Tensor ratio = (m.lse - u.lse).exp().unsqueeze(-1);
  EXPECT_LT(max_rel_diff(u.output, m.output * ratio), 1e-12);
  const at::Tensor q2 = q.narrow(2, 0, 80), v2 = v.narrow(2, 0, 80);
  EXPECT_TRUE(hyperattention_attention(q2, q2, v2, 0.5, masked, call)
                  .equal(hyperattention_attention(q2, q2, v2, 0.5, unmasked, call)));
}

// Unbiasedness (peers.md §3.4): with the hashing fixed, e^lse estimates Σ_j e^{s_ij} and
// e^lse · out estimates Σ_j e^{s_ij} v_j without bias. 4000 independent draws (one batch entry
// each, own seed); every component must lie within 4.5 standard errors of the truth (72
// components: a false alarm has probability < 1e-3), and the standard errors must be small
// enough (< 3 % of the truth) for the test to have power. Without de-duplication the in-block
// samples are counted twice: the mean is Σ_j e^{s_ij} + Z_block instead.
TEST(HyperAttention, NumeratorAndDenominatorAreUnbiased) {
  const int64_t draws = 4000, nq = 8, nk = 64, d = 6, dv = 8;
  const at::Tensor q = seeded_randn({1, 1, nq, d}, 31).mul_(0.8);
  const at::Tensor k = seeded_randn({1, 1, nk, d}, 32).mul_(0.8);
  const at::Tensor v = seeded_randn({1, 1, nk, dv}, 33);
  AttentionCall call;
  call.injected.projections = seeded_randn({d, 3}, 34);
  for (int64_t e = 0; e < draws; ++e) call.entry_seeds.push_back(1000 + e);
  const at::Tensor e_qk = at::matmul(q, k.transpose(-2, -1)).exp_();  // scale 1
  const at::Tensor true_den = e_qk.sum(-1).flatten();                 // [Nq]
  const at::Tensor true_num = at::matmul(e_qk, v).view({nq, dv});
  const at::Tensor truth = at::cat({true_den.unsqueeze(1), true_num}, 1);  // [Nq, 1 + Dv]
  auto estimates = [&](bool dedup) {
    const auto opt =
        HyperAttentionOptions().block_size(16).sample_size(8).num_projections(3).deduplicate(dedup);
    const HyperAttentionResult r =
        hyperattention_with_lse(q.expand({draws, 1, nq, d}), k.expand({draws, 1, nk, d}),
                                v.expand({draws, 1, nk, dv}), 1.0, opt, call);
    const at::Tensor z = r.lse.exp().view({draws, nq, 1});
    return at::cat({z, z * r.output.view({draws, nq, dv})}, 2);  // [draws, Nq, 1 + Dv]
  };
  const at::Tensor x = estimates(true);
  const at::Tensor mean = x.mean(0), se = x.std(0) / std::sqrt(static_cast<double>(draws));
  const double worst = ((mean - truth).abs() / se).max().item<double>();
  std::cout << "dedup: worst |mean - truth| / se = " << worst << "\n";
  EXPECT_LT(worst, 4.5);
  EXPECT_LT((se.select(1, 0) / true_den).max().item<double>(), 0.03);
  // Without de-duplication: E[e^lse] = Σ_j e^{s_ij} + Z_block (the s = 0 estimate's e^lse).
  const at::Tensor y = estimates(false).select(2, 0);  // [draws, Nq]
  const at::Tensor y_se = y.std(0) / std::sqrt(static_cast<double>(draws));
  const auto block_only = HyperAttentionOptions().block_size(16).sample_size(0).num_projections(3);
  const at::Tensor z_block =
      hyperattention_with_lse(q, k, v, 1.0, block_only, call).lse.exp().flatten();
  const double worst_biased = ((y.mean(0) - true_den - z_block).abs() / y_se).max().item<double>();
  std::cout << "no dedup: worst |mean - truth - Z_block| / se = " << worst_biased
            << ", largest bias / se = " << (z_block / y_se).max().item<double>() << "\n";
  EXPECT_LT(worst_biased, 4.5);
  EXPECT_GT((z_block / y_se).max().item<double>(), 20.0);
}

// Finite at large logits (|s| up to 1e4) in float32, matching float64 on the same inputs.
TEST(HyperAttention, Float32FiniteAndCloseToFloat64AtLargeLogits) {
  for (double size : {1.0, 1e4}) {
    at::Tensor q = seeded_randn({2, 1, 300, 16}, 41);
    q = q / q.norm(2, {-1}, true) * std::sqrt(size);
    const at::Tensor k = q.flip({2}).contiguous();
    const at::Tensor v = seeded_randn({2, 1, 300, 8}, 42);
    const auto opt = HyperAttentionOptions().block_size(32).sample_size(40);
    AttentionCall call = injected_call(16, 7, 300, 40, 43);
    const at::Tensor q32 = q.to(at::kFloat), k32 = k.to(at::kFloat);
    const at::Tensor out32 = hyperattention_attention(q32, k32, v.to(at::kFloat), 1.0, opt, call);
    const at::Tensor out64 =
        hyperattention_attention(q32.to(at::kDouble), k32.to(at::kDouble), v, 1.0, opt, call);
    EXPECT_EQ(out32.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::isfinite(out32).all().item<bool>());
    EXPECT_TRUE(at::isfinite(out64).all().item<bool>());
    EXPECT_LT(max_rel_diff(out32, out64), 1e-4) << "logit size " << size;
  }
}

// Deterministic per seed; entries never mix; an entry's output does not depend on its position.
TEST(HyperAttention, DeterministicAndIndependentOfTheBatch) {
  const at::Tensor x = seeded_randn({3, 2, 200, 16}, 51, at::kFloat);
  const at::Tensor v = seeded_randn({3, 2, 200, 16}, 52, at::kFloat);
  const auto opt = HyperAttentionOptions().block_size(32).sample_size(32);
  testing::expect_deterministic_and_batch_independent(
      testing::with_options(hyperattention_attention, opt), x, v);
}

// Through attention(): the min_seq_len fallback is visible in the report; otherwise it runs
// (BigGAN shape: Nq 4096, Nk 1024, D 64, Dv 256) and reports its blocks and samples.
TEST(HyperAttention, DispatchReportsFallbackAndBlocks) {
  const at::Tensor q = seeded_randn({1, 1, 4096, 64}, 61, at::kFloat).mul_(0.3);
  const at::Tensor k = seeded_randn({1, 1, 1024, 64}, 62, at::kFloat).mul_(0.3);
  const at::Tensor v = seeded_randn({1, 1, 1024, 256}, 63, at::kFloat);
  auto options = AttentionOptions(Method::kHyperAttention).scale(1.0);
  options.hyperattention().block_size(256).sample_size(256).min_seq_len(8192);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  const at::Tensor exact = attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kExact);
  EXPECT_NE(report.reason.find("Nq 4096 < min_seq_len 8192"), std::string::npos) << report.reason;
  options.hyperattention().min_seq_len(4096);
  const at::Tensor out = attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kHyperAttention);
  EXPECT_FALSE(report.fell_back);
  EXPECT_EQ(report.num_blocks, 4);
  EXPECT_EQ(report.block_keys, 256);
  EXPECT_EQ(report.sample_size, 256);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 1, 4096, 256}));
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
}

// No Nq × Nk tensor: peak extra memory is O(Nq · (b + s)).
TEST(HyperAttention, PeakMemoryIsLinearInSequenceLength) {
  const auto opt = HyperAttentionOptions().block_size(64).sample_size(128);
  for (int64_t n : {16384, 32768}) {
    const at::Tensor q = at::randn({1, 1, n, 64});
    const at::Tensor v = at::randn({1, 1, n, 64});
    PeakMemoryScope scope;
    const at::Tensor out = hyperattention_attention(q, q, v, 0.125, opt);
    EXPECT_LT(scope.peak_bytes(), 8 * n * (64 + 128 + 64 + 64) * 4) << "n=" << n;
    EXPECT_LT(scope.peak_bytes(), n * n * 4 / 16) << "n=" << n;
  }
}

// Parity with the reference on its own randomness (hyperplanes and sorted-position samples).
class HyperAttentionParity : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = std::make_unique<models::SafetensorsFile>(models::SafetensorsFile::open(
        std::string(KDESERVE_PEER_FIXTURE_DIR) + "/hyperattention_parity.safetensors"));
  }
  at::Tensor get(const std::string& name) const { return file_->get(name); }
  // Runs `name` (block b, samples s, r, scale as gen_hyperattention.py's CASES) in both modes.
  void check(const std::string& name, int64_t b, int64_t s, int64_t r, double scale, bool padded) {
    AttentionCall call;
    call.injected.projections = get(name + "_proj");
    if (s > 0) call.injected.sample_indices = get(name + "_samples");
    for (bool dedup : {false, true}) {
      const auto opt = HyperAttentionOptions()
                           .block_size(b)
                           .sample_size(s)
                           .num_projections(r)
                           .bucket_order(BucketOrder::kReference)
                           .mask_padding(false)
                           .deduplicate(dedup);
      const HyperAttentionResult got = hyperattention_with_lse(get(name + "_q"), get(name + "_k"),
                                                               get(name + "_v"), scale, opt, call);
      const std::string tag = dedup ? "_dedup" : "_ref";
      const double d_out = max_rel_diff(got.output, get(name + "_out" + tag));
      const double d_lse = (got.lse - get(name + "_lse" + tag)).abs().max().item<double>();
      std::cout << name << tag << ": max rel diff out " << d_out << ", max |lse diff| " << d_lse
                << "\n";
      EXPECT_LT(d_out, 1e-12);
      EXPECT_LT(d_lse, 1e-12);
      // The masked padding fix changes exactly the padded cases.
      const auto fixed = HyperAttentionOptions(opt).mask_padding(true);
      const at::Tensor out_fixed = hyperattention_attention(get(name + "_q"), get(name + "_k"),
                                                            get(name + "_v"), scale, fixed, call);
      EXPECT_EQ(max_rel_diff(out_fixed, got.output) > 1e-6, padded) << name;
    }
  }
  std::unique_ptr<models::SafetensorsFile> file_;
};

TEST_F(HyperAttentionParity, Divisible) { check("divisible", 16, 8, 3, 0.5, false); }
TEST_F(HyperAttentionParity, PaddedKeys) { check("padded", 16, 8, 3, 0.5, true); }
TEST_F(HyperAttentionParity, TwiceAsManyQueriesPadded) {
  check("nq2nk_padded", 16, 12, 4, 0.4, true);
}
TEST_F(HyperAttentionParity, BlockOnly) { check("block_only", 16, 0, 3, 0.5, false); }

}  // namespace
}  // namespace kdeserve::attention::hyperattention
