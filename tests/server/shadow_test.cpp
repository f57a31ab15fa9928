// The shadow check's scheduling (server/shadow.h): the picked fraction is exact, the compute
// budget holds, at most one check waits, and stop() drops what waits.
#include "server/shadow.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace ks = kdeserve::server;
using Clock = std::chrono::steady_clock;

namespace {

int picked(double fraction, int batches) {
  ks::ShadowConfig config;
  config.fraction = fraction;
  ks::ShadowSampler sampler(config, Clock::now());
  int n = 0;
  for (int i = 0; i < batches; ++i) n += sampler.pick() ? 1 : 0;
  return n;
}

}  // namespace

TEST(ShadowSampler, PicksTheConfiguredFractionEvenly) {
  EXPECT_EQ(picked(0.0, 1000), 0);
  EXPECT_EQ(picked(1.0, 1000), 1000);
  EXPECT_EQ(picked(0.1, 1000), 100);
  EXPECT_EQ(picked(0.01, 1000), 10);
  EXPECT_EQ(picked(0.25, 10), 2);
  ks::ShadowConfig config;
  config.fraction = 0.1;
  ks::ShadowSampler sampler(config, Clock::now());
  // Evenly: exactly one pick in every ten consecutive batches.
  for (int block = 0; block < 20; ++block) {
    int n = 0;
    for (int i = 0; i < 10; ++i) n += sampler.pick() ? 1 : 0;
    EXPECT_EQ(n, 1) << "block " << block;
  }
}

TEST(ShadowSampler, KeepsTheComputeShare) {
  ks::ShadowConfig config;
  config.fraction = 1.0;
  config.max_compute_share = 0.1;
  const Clock::time_point start = Clock::now() - std::chrono::seconds(100);
  ks::ShadowSampler sampler(config, start);
  const Clock::time_point now = start + std::chrono::seconds(100);
  EXPECT_TRUE(sampler.within_budget(now));
  sampler.spent(9.5);
  EXPECT_TRUE(sampler.within_budget(now)) << "9.5 s of 100 s at a share of 0.1";
  sampler.spent(1.0);
  EXPECT_FALSE(sampler.within_budget(now)) << "10.5 s of 100 s";
  EXPECT_TRUE(sampler.within_budget(start + std::chrono::seconds(106)));
  EXPECT_DOUBLE_EQ(sampler.spent_seconds(), 10.5);
}

TEST(ShadowWorker, RunsOneCheckAtATime) {
  ks::ShadowWorker worker;
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran{0};
  ASSERT_TRUE(worker.offer([&] {
    started.set_value();
    released.wait();
    ++ran;
  }));
  started.get_future().wait();
  EXPECT_FALSE(worker.offer([&] { ++ran; })) << "one is running";
  release.set_value();
  std::promise<void> second;
  bool offered = false;
  for (int i = 0; i < 400 && !offered; ++i) {
    offered = worker.offer([&] {
      ++ran;
      second.set_value();
    });
    if (!offered) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(offered) << "the worker never became free";
  second.get_future().wait();
  worker.stop();
  EXPECT_EQ(ran.load(), 2) << "the first and the one offered after it ended";
  EXPECT_FALSE(worker.offer([&] { ++ran; })) << "after stop()";
}

TEST(ShadowWorker, StopDropsTheWaitingCheck) {
  ks::ShadowWorker worker;
  std::promise<void> started, release;
  std::atomic<int> ran{0};
  ASSERT_TRUE(worker.offer([&] {
    started.set_value();
    release.get_future().wait();
  }));
  started.get_future().wait();
  std::thread stopper([&] { worker.stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(worker.offer([&] { ++ran; }));
  release.set_value();
  stopper.join();
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(ks::to_string(ks::ShadowOutcome::kNotSampled), "not_sampled");
}
