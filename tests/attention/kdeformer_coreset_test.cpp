// KDEformer's coreset far field (Residual::kCoreset; attention/kdeformer/coreset_far_field.h):
// the estimate against a dense computation from the coreset's own weights, the exact limit,
// the denominator floor, odd shapes, large logits, float32, determinism and batch
// independence, option checks, and that it beats WildCat and the block part alone on clustered
// attention at the same budget.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "attention/attention.h"
#include "attention/kdeformer/coreset_far_field.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"
#include "attention/wildcat/wildcat.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

KdeformerOptions coreset(int64_t b, int64_t r) {
  return KdeformerOptions().bucket_size(b).sample_size(r).residual(Residual::kCoreset);
}

// The estimate of every (entry, head) from its definition: exact e_il inside query i's block,
// the coreset's Ê_il = Σ_s e^{β q_i·k_s + o_s} W'_sl outside it, D̂ raised to
// max(Σ_blk e, max_s e^{β q_i·k_s}), optionally clamped. W' comes from far_field_coreset
// (wildcat::compress_bins or compress_bins_accelerated) with the same draws as the call.
at::Tensor dense_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale, int64_t rank, CoresetPivots pivots,
                          const AttentionCall& call, const KdeformerParts& parts, bool clamp) {
  const int64_t batch = q.size(0), heads = q.size(1), nk = k.size(2), dim = k.size(3);
  const at::Tensor k3 = k.reshape({batch * heads, nk, dim});
  const at::Tensor centred = k3 - k3.mean(1, true);
  const at::Tensor q_scale = q.reshape({batch * heads, -1, dim}).norm(2, 2).amax(1);
  const at::Tensor v3 = v.reshape({batch * heads, nk, -1});
  const at::Tensor v1 = at::cat({v3, at::ones({batch * heads, nk, 1}, v.options())}, 2);
  at::Tensor w;
  const wildcat::Coreset c =
      far_field_coreset(centred, v1, q_scale, scale, rank, batch, heads, pivots, call, &w);
  at::Tensor out = at::empty({batch, heads, q.size(2), v.size(3)}, v.options());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = b * heads + h;
      const at::Tensor s = at::matmul(q[b][h], k[b][h].t()).mul_(scale);  // [Nq, Nk]
      const at::Tensor inside =
          parts.query_block[b][h].unsqueeze(1).eq(parts.key_block[b][h].unsqueeze(0));
      const at::Tensor s_core = s.index_select(1, c.pivots[g]);           // [Nq, S]
      const at::Tensor e_hat = (s_core + c.log_offsets[g]).exp().matmul(w[g]);  // [Nq, Nk]
      const at::Tensor e = s.exp();
      const at::Tensor mixed = at::where(inside, e, e_hat);
      const at::Tensor num = mixed.matmul(v[b][h]);
      at::Tensor den = mixed.sum(1);
      const at::Tensor floor = at::maximum((e * inside).sum(1), s_core.exp().amax(1));
      den = at::maximum(den, floor);
      at::Tensor o = num / den.unsqueeze(1);
      if (clamp) o = at::maximum(at::minimum(o, v[b][h].amax(0)), v[b][h].amin(0));
      out[b][h].copy_(o);
    }
  }
  return out;
}

TEST(KdeformerCoreset, EqualsTheDenseEstimateFromTheCoresetWeights) {
  // Nq ≠ Nk, Dv ≠ D, Nk not a multiple of the block size: padded key blocks.
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 501).mul_(0.8);
  const at::Tensor k = seeded_randn({2, 2, 83, 8}, 502).mul_(0.8);
  const at::Tensor v = seeded_randn({2, 2, 83, 5}, 503);
  const double scale = 0.6;
  for (CoresetPivots pivots : {CoresetPivots::kAccelerated, CoresetPivots::kSequential}) {
    for (bool clamp : {false, true}) {
      AttentionCall call;
      call.seed = 11;
      const KdeformerOptions o = coreset(16, 24).clamp_output(clamp).coreset_pivots(pivots);
      const KdeformerParts parts = kdeformer_parts(q, k, v, scale, o, call);
      const at::Tensor dense = dense_estimate(q, k, v, scale, 24, pivots, call, parts, clamp);
      const bool sequential = pivots == CoresetPivots::kSequential;
      EXPECT_LT(max_rel_diff(parts.output, dense), 1e-10)
          << "clamp " << clamp << ", sequential " << sequential;
      EXPECT_LT(max_rel_diff(kdeformer_attention(q, k, v, scale, o, call), dense), 1e-10);
      EXPECT_TRUE(parts.residual_numerator.eq(0).all().item<bool>()) << "no samples are drawn";
    }
  }
}

TEST(KdeformerCoreset, ExactWhenTheCoresetHoldsEveryKey) {
  const at::Tensor q = seeded_randn({1, 2, 40, 6}, 511);
  const at::Tensor k = seeded_randn({1, 2, 50, 6}, 512);
  const at::Tensor v = seeded_randn({1, 2, 50, 4}, 513);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  const at::Tensor out = kdeformer_attention(q, k, v, 0.5, coreset(8, 50), call);
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 0.5)), 1e-12);
  EXPECT_EQ(report.coreset_size, 50);
  EXPECT_EQ(report.sample_size, 0);
}

TEST(KdeformerCoreset, DenominatorFloorAndClampHold) {
  const at::Tensor q = seeded_randn({1, 1, 200, 8}, 521).mul_(1.5);
  const at::Tensor k = seeded_randn({1, 1, 200, 8}, 522).mul_(1.5);
  const at::Tensor v = seeded_randn({1, 1, 200, 3}, 523);
  AttentionCall call;
  call.seed = 3;
  const KdeformerParts p = kdeformer_parts(q, k, v, 1.0, coreset(16, 12).clamp_output(true), call);
  EXPECT_TRUE(p.denominator_floor.ge(p.block_denominator).all().item<bool>());
  EXPECT_TRUE(p.denominator_floor.gt(0).all().item<bool>());
  // A lower bound of the true denominator Σ_j e^{s_ij − c_i} (the coreset's own may be lower).
  const at::Tensor s = at::matmul(q[0][0], k[0][0].t());
  const at::Tensor true_den = (s - p.shift[0][0].unsqueeze(1)).exp().sum(1);
  EXPECT_TRUE(p.denominator_floor[0][0].le(true_den * (1 + 1e-12)).all().item<bool>());
  const at::Tensor vmin = v.amin(2, true), vmax = v.amax(2, true);
  EXPECT_TRUE(p.output.ge(vmin).logical_and(p.output.le(vmax)).all().item<bool>());
}

TEST(KdeformerCoreset, FiniteAtLargeLogitsAndInFloat32) {
  const at::Tensor x = seeded_randn({1, 2, 300, 16}, 531);
  const at::Tensor v = seeded_randn({1, 2, 300, 16}, 532);
  for (double scale : {30.0, 1000.0}) {
    const at::Tensor out = kdeformer_attention(x, x, v, scale, coreset(32, 32),
                                               kdeserve::testing::seeded_call(5));
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << "scale " << scale;
    const at::Tensor out32 = kdeformer_attention(x.to(at::kFloat), x.to(at::kFloat),
                                                 v.to(at::kFloat), scale, coreset(32, 32),
                                                 kdeserve::testing::seeded_call(5));
    EXPECT_EQ(out32.scalar_type(), at::kFloat);
    EXPECT_TRUE(out32.isfinite().all().item<bool>()) << "float32, scale " << scale;
  }
  // Keys far from the origin (recentring keeps the coreset's temperature sane).
  const at::Tensor k = seeded_randn({1, 2, 300, 16}, 533).add_(20.0).to(at::kFloat);
  const at::Tensor q = seeded_randn({1, 2, 300, 16}, 534).mul_(0.05).to(at::kFloat);
  const at::Tensor out = kdeformer_attention(q, k, v.to(at::kFloat), 1.0, coreset(32, 64),
                                             kdeserve::testing::seeded_call(6));
  const at::Tensor exact = naive_attention(q.to(at::kDouble), k.to(at::kDouble), v, 1.0);
  EXPECT_LT(max_rel_diff(out.to(at::kDouble), exact), 0.5);
}

TEST(KdeformerCoreset, DeterministicAndBatchIndependent) {
  const at::Tensor x = seeded_randn({3, 2, 96, 8}, 541);
  const at::Tensor v = seeded_randn({3, 2, 96, 4}, 542);
  kdeserve::testing::expect_deterministic_and_batch_independent(
      kdeserve::testing::with_options(&kdeformer_attention, coreset(16, 16)), x, v);
}

TEST(KdeformerCoreset, RejectsNoCoresetKeysAndNoBlocks) {
  const at::Tensor x = seeded_randn({1, 1, 32, 4}, 551);
  EXPECT_THROW(kdeformer_attention(x, x, x, 1.0, coreset(8, 0)), c10::Error);
  EXPECT_THROW(kdeformer_attention(x, x, x, 1.0, coreset(8, 8).heavy(false)), c10::Error);
  // Injected uniforms are the sequential pivots' Gumbel draws: the accelerated ones refuse them.
  AttentionCall injected;
  injected.injected.uniforms = at::full({8, 32}, 0.5, at::kDouble);
  EXPECT_THROW(kdeformer_attention(x, x, x, 1.0, coreset(8, 8), injected), c10::Error);
  EXPECT_NO_THROW(kdeformer_attention(
      x, x, x, 1.0, coreset(8, 8).coreset_pivots(CoresetPivots::kSequential), injected));
  EXPECT_EQ(residual_from_string("coreset"), Residual::kCoreset);
  EXPECT_EQ(to_string(Residual::kCoreset), "coreset");
}

TEST(KdeformerCoreset, BeatsWildCatAndTheBlocksAloneOnClusteredAttention) {
  // 32 clusters of 2048 keys (the synthetic "peaked" regime's construction): the blocks hold a
  // query's own cluster only in part, the coreset represents the rest.
  const int64_t n = 2048, d = 32;
  const at::Tensor centres = seeded_randn({32, d}, 561);
  const at::Tensor which = at::randint(32, {n}, at::Generator(at::detail::createCPUGenerator(562)),
                                       at::TensorOptions(at::kLong));
  at::Tensor x = centres.index_select(0, which).add_(seeded_randn({n, d}, 563).mul_(0.7));
  x.mul_(std::sqrt(8.1 / x.square().sum(1).mean().item<double>()));
  x = x.view({1, 1, n, d});
  const at::Tensor v = seeded_randn({1, 1, n, d}, 564).add_(seeded_randn({1, 1, 1, d}, 565).mul_(0.5));
  const at::Tensor exact = naive_attention(x, x, v, 1.0)[0][0];
  auto rel = [&](const at::Tensor& est) {
    return (spectral_norm(est[0][0] - exact) / spectral_norm(exact)).item<double>();
  };
  const int64_t m = 256;
  double ours = 0, sequential = 0, wc = 0, blocks = 0;
  for (uint64_t seed : {1, 2, 3}) {
    const AttentionCall call = kdeserve::testing::seeded_call(seed);
    const KdeformerOptions far = coreset(m / 4, 3 * m / 4).clamp_output(true);
    ours += rel(kdeformer_attention(x, x, v, 1.0, far, call)) / 3;
    sequential +=
        rel(kdeformer_attention(
            x, x, v, 1.0, KdeformerOptions(far).coreset_pivots(CoresetPivots::kSequential), call)) /
        3;
    blocks += rel(kdeformer_attention(x, x, v, 1.0, KdeformerOptions().bucket_size(m)
                                                        .sample_size(0), call)) / 3;
    AttentionOptions o(Method::kWildCat);
    o.wildcat().rank(m).num_bins(1);
    wc += rel(attention(x, x, v, o.scale(1.0), call)) / 3;
  }
  std::cout << "m = " << m << ": coreset far field " << ours << " (sequential pivots "
            << sequential << "), WildCat " << wc << ", blocks alone " << blocks << "\n";
  EXPECT_LT(ours, 0.9 * wc);
  EXPECT_LT(sequential, 0.9 * wc);
  EXPECT_LT(ours, 0.7 * blocks);
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
