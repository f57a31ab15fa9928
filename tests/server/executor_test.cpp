// The compute executor: work runs on one thread, exceptions come back, calls from that thread run
// inline, and the idle trim runs after work only, never while work is queued.
#include "server/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ks = kdeserve::server;
using namespace std::chrono_literals;

namespace {

ks::ComputeExecutor::Options counting(std::atomic<int>& trims, std::chrono::milliseconds every) {
  ks::ComputeExecutor::Options o;
  o.trim_interval = every;
  o.trim = [&trims] { ++trims; };
  return o;
}

// Polls `done` for up to 5 s (a loaded CI machine can delay a thread by seconds).
template <typename F>
bool eventually(F done) {
  for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(10ms);
  return done();
}

}  // namespace

TEST(ComputeExecutor, RunsWorkOnOneThreadAndRethrows) {
  std::atomic<int> trims{0};
  ks::ComputeExecutor ex(counting(trims, 0ms));
  std::thread::id first, second;
  ex.run([&] { first = std::this_thread::get_id(); });
  ex.run([&] { second = std::this_thread::get_id(); });
  EXPECT_EQ(first, second);
  EXPECT_NE(first, std::this_thread::get_id());
  EXPECT_THROW(ex.run([] { throw std::invalid_argument("x"); }), std::invalid_argument);
  bool inner = false;
  ex.run([&] { ex.run([&] { inner = std::this_thread::get_id() == first; }); });
  EXPECT_TRUE(inner);
}

TEST(ComputeExecutor, NoTrimWhenDisabledOrBeforeAnyWork) {
  std::atomic<int> disabled{0}, idle{0};
  {
    ks::ComputeExecutor off(counting(disabled, 0ms));
    ks::ComputeExecutor never_worked(counting(idle, 1ms));
    off.run([] {});
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(disabled.load(), 0);
  EXPECT_EQ(idle.load(), 0) << "an executor that never ran work has nothing to trim";
}

TEST(ComputeExecutor, TrimsOnceAfterWorkWhenIdle) {
  std::atomic<int> trims{0};
  ks::ComputeExecutor ex(counting(trims, 20ms));
  ex.run([] {});
  ASSERT_TRUE(eventually([&] { return trims.load() == 1; }));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(trims.load(), 1) << "idle with nothing new freed: no second trim";
  EXPECT_EQ(ex.trims(), 1);
  ex.run([] {});
  ASSERT_TRUE(eventually([&] { return trims.load() == 2; }));
}

TEST(ComputeExecutor, QueuedWorkRunsBeforeTheTrim) {
  // A runs longer than the interval while B is queued behind it: B must run before the trim.
  std::vector<std::string> order;  // written on the compute thread only
  std::atomic<int> trims{0};
  ks::ComputeExecutor::Options o;
  o.trim_interval = 1ms;
  o.trim = [&] {
    order.push_back("trim");
    ++trims;
  };
  ks::ComputeExecutor ex(o);
  std::atomic<bool> a_started{false};
  std::thread first([&] {
    ex.run([&] {
      a_started = true;
      std::this_thread::sleep_for(200ms);
      order.push_back("A");
    });
  });
  ASSERT_TRUE(eventually([&] { return a_started.load(); }));
  ex.run([&] { order.push_back("B"); });
  first.join();
  ASSERT_TRUE(eventually([&] { return trims.load() == 1; }));
  std::vector<std::string> seen;
  ex.run([&] { seen = order; });  // read on the compute thread: no race with a later trim
  EXPECT_EQ(seen, (std::vector<std::string>{"A", "B", "trim"}));
}
