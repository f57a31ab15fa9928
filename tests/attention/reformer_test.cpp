// Reformer (attention/reformer): the estimate against an independent dense formula, its limits,
// padding and look-back modes, numerics, batch independence, and parity with the KDEformer
// authors' root Reformer.py @ 427df2d5 (fixtures/reformer_parity.safetensors, written by
// tools/peer_fixtures/gen_reformer.py).
#include "attention/reformer/reformer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "models/weights/safetensors.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention::reformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_randn;

// Stable (bucket, position) order of x [n, D] under rotation r [D, half].
at::Tensor sorted_by_bucket(const at::Tensor& x, const at::Tensor& r) {
  at::Tensor rot = at::matmul(x, r);
  at::Tensor buckets = at::cat({rot, -rot}, 1).argmax(1);
  return std::get<1>(at::sort(buckets, /*stable=*/true, 0, false));
}

// The estimate written densely (float64): for every round a count matrix [Nq, n] of how often
// each key is in each query's window, built chunk by chunk from the documented rules.
at::Tensor dense_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale, const ReformerOptions& opt, const at::Tensor& rotations) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), nk = k.size(2);
  const int64_t dv = v.size(3), b = opt.bucket_size(), hashes = opt.num_hashes();
  const bool shared = opt.shared_qk();
  const int64_t half = (nk + 2 * b - 1) / (2 * b);
  const int64_t n = opt.mask_padding() ? nk : 2 * b * half;
  const int64_t chunks = (n + b - 1) / b;
  const int64_t cycle = opt.look_back_across_rounds() ? hashes * chunks : chunks;
  std::vector<at::Tensor> outs;
  for (int64_t g = 0; g < batch * heads; ++g) {
    const int64_t e = g / heads, hd = g % heads;
    auto pad = [&](const at::Tensor& x) {
      return at::cat({x, at::zeros({n - x.size(0), x.size(1)}, x.options())});
    };
    at::Tensor qg = q[e][hd].to(at::kDouble), vg = pad(v[e][hd].to(at::kDouble));
    at::Tensor qh = shared ? pad(qg) : qg;
    at::Tensor kh = shared ? qh : pad(k[e][hd].to(at::kDouble));
    at::Tensor keys = shared ? qh / qh.norm(2, {1}, true).clamp_min(1e-12) : kh;
    const int64_t rows = qh.size(0);
    at::Tensor rot = rotations.dim() == 3 ? rotations : rotations[e][hd];
    // Chunk key lists of every round, and each query's chunk.
    std::vector<std::vector<std::vector<int64_t>>> chunk_keys(hashes);
    std::vector<std::vector<int64_t>> query_chunk(hashes, std::vector<int64_t>(rows));
    for (int64_t h = 0; h < hashes; ++h) {
      at::Tensor r = rot[h].to(at::kDouble);
      at::Tensor ko = sorted_by_bucket(kh, r), qo = shared ? ko : sorted_by_bucket(qh, r);
      chunk_keys[h].resize(chunks);
      for (int64_t p = 0; p < n; ++p) chunk_keys[h][p / b].push_back(ko[p].item<int64_t>());
      for (int64_t p = 0; p < rows; ++p) {
        int64_t c = 0;
        while (c + 1 < chunks && (shared ? (c + 1) * b : std::min((c + 1) * b, n) * rows / n) <= p)
          ++c;
        query_chunk[h][qo[p].item<int64_t>()] = c;
      }
    }
    at::Tensor s = at::matmul(qh, keys.t()).mul_(scale);  // [rows, n]
    at::Tensor big_l = at::empty({hashes, nq}, at::kDouble);
    at::Tensor big_o = at::empty({hashes, nq, dv}, at::kDouble);
    for (int64_t h = 0; h < hashes; ++h) {
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t c = query_chunk[h][i];
        std::vector<int64_t> window = chunk_keys[h][c];
        if (cycle > 1) {
          const int64_t f = opt.look_back_across_rounds() ? (h * chunks + c + cycle - 1) % cycle
                                                          : h * chunks + (c + chunks - 1) % chunks;
          const auto& prev = chunk_keys[f / chunks][f % chunks];
          window.insert(window.end(), prev.begin(), prev.end());
        }
        at::Tensor count = at::zeros({n}, at::kDouble);
        for (int64_t j : window) count[j] += 1;
        bool self_only = false;
        if (shared) {
          self_only = count.sum().item<double>() == count[i].item<double>();
          if (!self_only) count[i] = 0;
        }
        at::Tensor w = s[i].exp() * count;
        big_o[h][i] = self_only ? vg[i] : at::matmul(w, vg) / w.sum();
        big_l[h][i] =
            self_only ? -std::numeric_limits<double>::infinity() : w.sum().log().item<double>();
      }
    }
    at::Tensor top = big_l.amax(0);
    at::Tensor weight = (big_l - top).exp();  // NaN only where every round is self-only
    at::Tensor out = (big_o * weight.unsqueeze(2)).sum(0) / weight.sum(0).unsqueeze(1);
    if (shared) out = at::where(at::isneginf(top).unsqueeze(1), vg.narrow(0, 0, nq), out);
    outs.push_back(out);
  }
  return at::stack(outs).view({batch, heads, nq, dv});
}

struct Case {
  int64_t batch, heads, nq, nk, d, dv, bucket, hashes;
  bool shared;
};

class ReformerShapes : public ::testing::TestWithParam<Case> {};

// Every mode at odd sizes, Nq ≠ Nk (real keys), Dv ≠ D: the chunked, sorted, LSE-merged
// implementation equals the dense count-matrix formula.
TEST_P(ReformerShapes, EqualsDenseFormulaOfTheSameEstimate) {
  const Case z = GetParam();
  const at::Tensor q = seeded_randn({z.batch, z.heads, z.nq, z.d}, 11);
  const at::Tensor k = z.shared ? q : seeded_randn({z.batch, z.heads, z.nk, z.d}, 12);
  const at::Tensor v = seeded_randn({z.batch, z.heads, z.nk, z.dv}, 13);
  const int64_t half = (z.nk + 2 * z.bucket - 1) / (2 * z.bucket);
  AttentionCall call;
  call.injected.rotations = seeded_randn({z.batch, z.heads, z.hashes, z.d, half}, 14);
  for (bool mask : {true, false}) {
    for (bool across : {true, false}) {
      const auto opt = ReformerOptions()
                           .bucket_size(z.bucket)
                           .num_hashes(z.hashes)
                           .shared_qk(z.shared)
                           .mask_padding(mask)
                           .look_back_across_rounds(across);
      const at::Tensor out = reformer_attention(q, k, v, 0.6, opt, call);
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{z.batch, z.heads, z.nq, z.dv}));
      // Absolute: outputs are averages of N(0, 1) values (and exactly 0 for a lone padded query).
      const at::Tensor dense = dense_estimate(q, k, v, 0.6, opt, *call.injected.rotations);
      EXPECT_LT((out - dense).abs().max().item<double>(), 1e-12)
          << "mask " << mask << " across " << across;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AnySizes, ReformerShapes,
    ::testing::Values(Case{1, 1, 64, 64, 8, 8, 8, 2, true},     // divisible, shared
                      Case{2, 2, 77, 77, 6, 5, 8, 3, true},     // odd, shared
                      Case{1, 1, 64, 64, 8, 8, 8, 2, false},    // divisible, real keys
                      Case{1, 2, 150, 50, 8, 12, 8, 3, false},  // Nq = 3 Nk, Dv > D
                      Case{2, 1, 5, 41, 4, 3, 8, 2, false},     // fewer queries than chunks
                      Case{1, 1, 1, 1, 4, 3, 4, 2, true}),      // a lone query: attends itself
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& z = info.param;
      return std::string(z.shared ? "Shared" : "Real") + "B" + std::to_string(z.batch) + "H" +
             std::to_string(z.heads) + "Nq" + std::to_string(z.nq) + "Nk" + std::to_string(z.nk) +
             "b" + std::to_string(z.bucket) + "h" + std::to_string(z.hashes);
    });

// One chunk covering everything (masked) is exact softmax over the allowed keys: every key
// (real keys), every other normalised query (shared-QK). Two chunks per round looking back
// within the round also cover everything, for any number of rounds.
TEST(Reformer, ChunksCoveringEverythingAreExact) {
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 21);
  const at::Tensor k = seeded_randn({2, 2, 50, 8}, 22);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 23);
  const at::Tensor exact = naive_attention(q, k, v, 0.4);
  for (int64_t bucket : {50, 64, 25, 30}) {
    const auto opt = ReformerOptions().bucket_size(bucket).num_hashes(3);
    EXPECT_LT(max_rel_diff(reformer_attention(q, k, v, 0.4, opt), exact), 1e-13) << bucket;
  }
  EXPECT_FALSE(exact_reason(ReformerOptions().bucket_size(50), 70, 50).empty());
  EXPECT_TRUE(exact_reason(ReformerOptions().bucket_size(25), 70, 50).empty());

  const at::Tensor x = seeded_randn({1, 2, 40, 8}, 24);
  const at::Tensor vx = seeded_randn({1, 2, 40, 5}, 25);
  const at::Tensor x_hat = x / x.norm(2, {-1}, true);
  at::Tensor s = at::matmul(x, x_hat.transpose(-2, -1)).mul_(0.4);
  s.diagonal(0, -2, -1).fill_(-std::numeric_limits<double>::infinity());
  const at::Tensor expected = at::matmul(at::softmax(s, -1), vx);
  for (int64_t bucket : {40, 20}) {
    const auto opt = ReformerOptions().bucket_size(bucket).num_hashes(2).shared_qk(true);
    EXPECT_LT(max_rel_diff(reformer_attention(x, x, vx, 0.4, opt), expected), 1e-13) << bucket;
  }
}

// Padding: the reference's zero keys change the result exactly when n is not a multiple of
// 2·bucket_size; otherwise both modes agree bit for bit.
TEST(Reformer, PaddingMaskedVersusReferenceUnmasked) {
  for (int64_t n : {60, 64}) {
    const at::Tensor x = seeded_randn({1, 2, n, 8}, 31);
    const at::Tensor v = seeded_randn({1, 2, n, 4}, 32);
    AttentionCall call;
    call.injected.rotations = seeded_randn({2, 8, 4}, 33);
    const auto masked = ReformerOptions().bucket_size(8).num_hashes(2).shared_qk(true);
    const auto unmasked = ReformerOptions(masked).mask_padding(false);
    const at::Tensor a = reformer_attention(x, x, v, 1.0, masked, call);
    const at::Tensor b = reformer_attention(x, x, v, 1.0, unmasked, call);
    if (n == 64) {
      EXPECT_TRUE(a.equal(b));
    } else {
      EXPECT_GT(max_rel_diff(b, a), 1e-3);
    }
  }
}

// Finite at large logits (up to 1e4) in float32, matching float64 on the same inputs.
TEST(Reformer, Float32FiniteAndCloseToFloat64AtLargeLogits) {
  for (bool shared : {true, false}) {
    for (double size : {1.0, 1e4}) {
      at::Tensor q = seeded_randn({2, 1, 300, 16}, 41);
      q = (q / q.norm(2, {-1}, true) * std::sqrt(size)).to(at::kFloat).to(at::kDouble);
      const at::Tensor k = shared ? q : q.flip({2}).contiguous();
      const at::Tensor v = seeded_randn({2, 1, 300, 8}, 42).to(at::kFloat).to(at::kDouble);
      const auto opt = ReformerOptions().bucket_size(32).num_hashes(2).shared_qk(shared);
      AttentionCall call;
      call.seed = 43;
      const at::Tensor out32 =
          reformer_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), 1.0, opt, call);
      const at::Tensor out64 = reformer_attention(q, k, v, 1.0, opt, call);
      EXPECT_EQ(out32.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::isfinite(out32).all().item<bool>());
      EXPECT_LT(max_rel_diff(out32, out64), 1e-4) << "shared " << shared << " size " << size;
    }
  }
}

// Deterministic per seed; entries and heads never mix; independent of the batch position.
TEST(Reformer, DeterministicAndIndependentOfTheBatch) {
  const at::Tensor x = seeded_randn({3, 2, 200, 16}, 51, at::kFloat);
  const at::Tensor v = seeded_randn({3, 2, 200, 16}, 52, at::kFloat);
  const auto opt = ReformerOptions().bucket_size(16).num_hashes(2);
  testing::expect_deterministic_and_batch_independent(
      testing::with_options(reformer_attention, opt), x, v);
}

// Through attention(): shared-QK on Nq ≠ Nk falls back visibly; the BigGAN shape (Nq 4096,
// Nk 1024, D 64, Dv 256) runs with real keys and reports its chunks and rounds.
TEST(Reformer, DispatchReportsFallbackAndChunks) {
  const at::Tensor q = seeded_randn({1, 1, 4096, 64}, 61, at::kFloat).mul_(0.3);
  const at::Tensor k = seeded_randn({1, 1, 1024, 64}, 62, at::kFloat).mul_(0.3);
  const at::Tensor v = seeded_randn({1, 1, 1024, 256}, 63, at::kFloat);
  auto options = AttentionOptions(Method::kReformer).scale(1.0);
  options.reformer().bucket_size(64).num_hashes(8).shared_qk(true);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kExact);
  EXPECT_NE(report.reason.find("shared_qk needs Nq = Nk"), std::string::npos) << report.reason;
  options.reformer().shared_qk(false);
  const at::Tensor out = attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kReformer);
  EXPECT_FALSE(report.fell_back);
  EXPECT_EQ(report.num_blocks, 16);
  EXPECT_EQ(report.block_keys, 128);
  EXPECT_EQ(report.num_hashes, 8);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 1, 4096, 256}));
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
}

// No Nq × Nk tensor: peak extra memory grows linearly in n at a fixed bucket size (the hash
// logits are O(n · n_buckets) = O(n² / bucket_size), as upstream: 2 rounds, bucket 256).
TEST(Reformer, PeakMemoryIsFarBelowDense) {
  const auto opt = ReformerOptions().bucket_size(256).num_hashes(2);
  for (int64_t n : {16384, 32768}) {
    const at::Tensor q = at::randn({1, 1, n, 64});
    const at::Tensor v = at::randn({1, 1, n, 64});
    PeakMemoryScope scope;
    const at::Tensor out = reformer_attention(q, q, v, 0.125, opt);
    EXPECT_LT(scope.peak_bytes(), n * n * 4 / 16) << "n=" << n;
  }
}

// Parity with the reference (shared-QK, scale 1, unmasked padding, look-back across rounds) on
// its own rotations.
class ReformerParity : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = std::make_unique<models::SafetensorsFile>(models::SafetensorsFile::open(
        std::string(KDESERVE_PEER_FIXTURE_DIR) + "/reformer_parity.safetensors"));
  }
  void check(const std::string& name, int64_t bucket, int64_t hashes) {
    const at::Tensor q = file_->get(name + "_q"), v = file_->get(name + "_v");
    AttentionCall call;
    call.injected.rotations = file_->get(name + "_rotations");
    const auto opt = ReformerOptions()
                         .bucket_size(bucket)
                         .num_hashes(hashes)
                         .shared_qk(true)
                         .mask_padding(false)
                         .look_back_across_rounds(true);
    const at::Tensor out = reformer_attention(q, q, v, 1.0, opt, call);
    const double diff = max_rel_diff(out, file_->get(name + "_out"));
    std::cout << name << ": max rel diff " << diff << "\n";
    EXPECT_LT(diff, 1e-12);
    // The fixed look-back (within each round) is a different estimate whenever h > 1.
    const at::Tensor within =
        reformer_attention(q, q, v, 1.0, ReformerOptions(opt).look_back_across_rounds(false), call);
    EXPECT_EQ(max_rel_diff(within, out) > 1e-9, hashes > 1) << name;
  }
  std::unique_ptr<models::SafetensorsFile> file_;
};

TEST_F(ReformerParity, Divisible) { check("divisible", 8, 3); }
TEST_F(ReformerParity, Padded) { check("padded", 8, 2); }
TEST_F(ReformerParity, PaddedWide) { check("padded_wide", 16, 4); }
TEST_F(ReformerParity, OneHash) { check("one_hash", 8, 1); }

}  // namespace
}  // namespace kdeserve::attention::reformer
