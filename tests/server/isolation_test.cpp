// Failure isolation of a batch (server/isolation.h): the failing request fails alone.
#include "server/isolation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <stdexcept>

namespace ks = kdeserve::server;

namespace {

struct Outcome {
  std::map<int, int> ran;     // request → successful runs it was part of
  std::map<int, int> failed;  // request → failures reported
  int runs = 0, splits = 0;
};

Outcome isolate(int n, const std::vector<int>& bad) {
  Outcome out;
  std::vector<int> batch;
  for (int i = 0; i < n; ++i) batch.push_back(i);
  ks::run_isolating(
      batch,
      [&](std::vector<int>& b) {
        ++out.runs;
        for (int x : b) {
          if (std::find(bad.begin(), bad.end(), x) != bad.end()) {
            throw std::runtime_error("bad row " + std::to_string(x));
          }
        }
        for (int x : b) ++out.ran[x];
      },
      [&](int x, std::exception_ptr error) {
        EXPECT_TRUE(error);
        ++out.failed[x];
      },
      [&](const std::vector<int>&, std::exception_ptr) { ++out.splits; });
  return out;
}

}  // namespace

TEST(Isolation, AGoodBatchRunsOnce) {
  const Outcome o = isolate(8, {});
  EXPECT_EQ(o.runs, 1);
  EXPECT_EQ(o.splits, 0);
  EXPECT_EQ(o.ran.size(), 8u);
}

TEST(Isolation, OneBadRequestFailsAloneAndTheOthersAreAnsweredOnce) {
  for (int n : {2, 3, 5, 8}) {
    for (int bad = 0; bad < n; ++bad) {
      const Outcome o = isolate(n, {bad});
      EXPECT_EQ(o.failed.size(), 1u);
      EXPECT_EQ(o.failed.at(bad), 1);
      EXPECT_EQ(o.ran.size(), static_cast<size_t>(n - 1));
      for (const auto& [x, times] : o.ran) EXPECT_EQ(times, 1) << "request " << x;
      int log2n = 0;
      while ((1 << log2n) < n) ++log2n;
      EXPECT_LE(o.runs, 1 + 2 * log2n) << "n=" << n;
    }
  }
}

TEST(Isolation, SeveralBadRequestsEachFailAlone) {
  const Outcome o = isolate(8, {1, 6, 7});
  EXPECT_EQ(o.failed.size(), 3u);
  EXPECT_EQ(o.ran.size(), 5u);
  for (const auto& [x, times] : o.ran) EXPECT_EQ(times, 1);
}

TEST(Isolation, ASingleFailingRequestIsNotRetried) {
  const Outcome o = isolate(1, {0});
  EXPECT_EQ(o.runs, 1);
  EXPECT_EQ(o.failed.at(0), 1);
}
