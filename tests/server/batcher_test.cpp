// The dynamic batcher on its own: batch formation, delay, queue limit, deadlines, cancellation,
// shutdown.
#include "server/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>

namespace ks = kdeserve::server;
using namespace std::chrono_literals;
using B = ks::Batcher<int>;

namespace {

// Records what the worker did.
struct Recorder {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::vector<int>> batches;
  std::vector<std::string> batch_keys;
  std::map<int, ks::DropReason> dropped;
  std::promise<void>* gate = nullptr;  // when set, run blocks until released
  std::shared_future<void> release;

  B::Hooks hooks() {
    B::Hooks h;
    h.run = [this](std::vector<B::Task>& batch) {
      if (release.valid()) release.wait();
      std::lock_guard<std::mutex> lock(mutex);
      std::vector<int> ids;
      for (auto& t : batch) ids.push_back(t.payload);
      batches.push_back(ids);
      batch_keys.push_back(batch.front().key);
      changed.notify_all();
    };
    h.drop = [this](B::Task& t, ks::DropReason reason) {
      std::lock_guard<std::mutex> lock(mutex);
      dropped[t.payload] = reason;
      changed.notify_all();
    };
    return h;
  }
  size_t answered() {
    size_t n = dropped.size();
    for (auto& b : batches) n += b.size();
    return n;
  }
  bool wait_for(size_t n, std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return answered() >= n; });
  }
};

B::Task task(int id, int64_t items = 1, std::string key = "exact") {
  B::Task t;
  t.payload = id;
  t.items = items;
  t.key = std::move(key);
  return t;
}

}  // namespace

TEST(Batcher, FillsBatchesUpToMaxItems) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = 500ms;  // long: batches must be formed by size
  o.max_queue_length = 100;
  B b(o, rec.hooks());
  for (int i = 0; i < 8; ++i) ASSERT_EQ(b.submit(task(i)), ks::SubmitResult::kAccepted);
  ASSERT_TRUE(rec.wait_for(8));
  ASSERT_EQ(rec.batches.size(), 2u);
  EXPECT_EQ(rec.batches[0], (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(rec.batches[1], (std::vector<int>{4, 5, 6, 7}));
}

TEST(Batcher, CountsItemsNotTasksAndKeepsFifo) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = 200ms;
  B b(o, rec.hooks());
  b.submit(task(0, 3));
  b.submit(task(1, 2));  // does not fit with 0
  b.submit(task(2, 1));
  ASSERT_TRUE(rec.wait_for(3));
  ASSERT_EQ(rec.batches.size(), 2u);
  EXPECT_EQ(rec.batches[0], (std::vector<int>{0}));
  EXPECT_EQ(rec.batches[1], (std::vector<int>{1, 2}));
  EXPECT_THROW(b.submit(task(9, 5)), std::invalid_argument);
}

TEST(Batcher, RunsAPartialBatchAfterTheDelay) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay = 50ms;
  B b(o, rec.hooks());
  const auto t0 = std::chrono::steady_clock::now();
  b.submit(task(0));
  b.submit(task(1));
  ASSERT_TRUE(rec.wait_for(2));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 45ms);  // waited for the batch to fill …
  ASSERT_EQ(rec.batches.size(), 1u);  // … then ran what it had
  EXPECT_EQ(rec.batches[0], (std::vector<int>{0, 1}));
}

TEST(Batcher, NeverMixesKeys) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay = 30ms;
  B b(o, rec.hooks());
  b.submit(task(0, 1, "exact"));
  b.submit(task(1, 1, "kdeformer"));
  b.submit(task(2, 1, "exact"));
  ASSERT_TRUE(rec.wait_for(3));
  ASSERT_EQ(rec.batches.size(), 2u);
  EXPECT_EQ(rec.batches[0], (std::vector<int>{0, 2}));
  EXPECT_EQ(rec.batch_keys[0], "exact");
  EXPECT_EQ(rec.batches[1], (std::vector<int>{1}));
  EXPECT_EQ(rec.batch_keys[1], "kdeformer");
}

TEST(Batcher, FullQueueIsRefusedImmediately) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  o.max_queue_length = 2;
  B b(o, rec.hooks());
  ASSERT_EQ(b.submit(task(0)), ks::SubmitResult::kAccepted);  // taken by the worker, blocks
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(b.submit(task(1)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.submit(task(2)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.submit(task(3)), ks::SubmitResult::kQueueFull);
  EXPECT_EQ(b.depth(), 2u);
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(3));
  EXPECT_EQ(rec.batches.size(), 3u);
}

TEST(Batcher, ExpiredTaskIsDroppedNotRun) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  B b(o, rec.hooks());
  b.submit(task(0));  // blocks the worker
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  auto t = task(1);
  t.deadline = std::chrono::steady_clock::now() + 20ms;
  b.submit(std::move(t));
  b.submit(task(2));
  std::this_thread::sleep_for(40ms);  // task 1's deadline passes while queued
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(3));
  ASSERT_EQ(rec.dropped.count(1), 1u);
  EXPECT_EQ(rec.dropped[1], ks::DropReason::kDeadline);
  ASSERT_EQ(rec.batches.size(), 2u);
  EXPECT_EQ(rec.batches[1], (std::vector<int>{2}));
}

TEST(Batcher, CancelledTaskIsDroppedNotRun) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = 0ms;
  B b(o, rec.hooks());
  b.submit(task(0));
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  auto t = task(1);
  t.cancelled = [cancelled] { return cancelled->load(); };
  b.submit(std::move(t));
  b.submit(task(2));
  cancelled->store(true);
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(3));
  EXPECT_EQ(rec.dropped.at(1), ks::DropReason::kCancelled);
  EXPECT_EQ(rec.batches.back(), (std::vector<int>{2}));
}

TEST(Batcher, ShutdownRunsWhatIsQueuedAndRefusesNewTasks) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 2;
  o.max_queue_delay = 10s;  // would wait long; shutdown must not
  B b(o, rec.hooks());
  for (int i = 0; i < 5; ++i) b.submit(task(i));
  const auto t0 = std::chrono::steady_clock::now();
  b.shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(rec.answered(), 5u);
  EXPECT_EQ(b.submit(task(9)), ks::SubmitResult::kShutdown);
  b.shutdown();  // idempotent
}

TEST(Batcher, ThrowingRunReachesFailHook) {
  std::atomic<int> failed{0};
  B::Hooks h;
  h.run = [](std::vector<B::Task>&) { throw std::runtime_error("boom"); };
  h.drop = [](B::Task&, ks::DropReason) {};
  h.fail = [&](std::vector<B::Task>& batch, std::exception_ptr) {
    failed += static_cast<int>(batch.size());
  };
  ks::BatcherOptions o;
  o.max_queue_delay = 0ms;
  B b(o, h);
  b.submit(task(0));
  b.submit(task(1));
  b.shutdown();
  EXPECT_EQ(failed.load(), 2);
}

// Finding 5 of issue 10: a cancelled or expired task must give its slot back while the worker
// is busy with another batch, not when the next batch forms.
TEST(Batcher, ReapFreesDeadSlotsWhileTheWorkerIsBusy) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  o.max_queue_length = 2;
  B b(o, rec.hooks());
  ASSERT_EQ(b.submit(task(0)), ks::SubmitResult::kAccepted);  // taken by the worker, blocks
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  auto t1 = task(1);
  t1.cancelled = [cancelled] { return cancelled->load(); };
  ASSERT_EQ(b.submit(std::move(t1)), ks::SubmitResult::kAccepted);
  auto t2 = task(2);
  t2.deadline = std::chrono::steady_clock::now() + 10ms;
  ASSERT_EQ(b.submit(std::move(t2)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.submit(task(3)), ks::SubmitResult::kQueueFull);
  cancelled->store(true);
  b.reap();
  EXPECT_EQ(rec.dropped.at(1), ks::DropReason::kCancelled);
  EXPECT_EQ(b.depth(), 1u);
  std::this_thread::sleep_for(20ms);
  // admit() reaps the expired task itself: both new tasks fit.
  EXPECT_EQ(b.submit(task(4)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.submit(task(5)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(rec.dropped.at(2), ks::DropReason::kDeadline);
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(5));
  EXPECT_EQ(rec.batches.size(), 3u);
}

// The worker frees an expired slot at its deadline even when nobody calls reap().
TEST(Batcher, WorkerDropsATaskAtItsDeadlineWhileWaitingForABatch) {
  Recorder rec;
  ks::BatcherOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay = 2s;
  B b(o, rec.hooks());
  auto t = task(0);
  t.deadline = std::chrono::steady_clock::now() + 30ms;
  b.submit(std::move(t));
  ASSERT_TRUE(rec.wait_for(1, 1000ms));
  EXPECT_EQ(rec.dropped.at(0), ks::DropReason::kDeadline);
  EXPECT_EQ(b.depth(), 0u);
}

// Finding 8: a request of several tasks is admitted whole or not at all.
TEST(Batcher, AdmissionIsAllOrNothing) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  o.max_queue_length = 3;
  B b(o, rec.hooks());
  ASSERT_EQ(b.submit(task(0)), ks::SubmitResult::kAccepted);
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(b.submit(task(1)), ks::SubmitResult::kAccepted);
  ks::SubmitResult result;
  B::Reservation too_big = b.admit(3, 0, &result);
  EXPECT_EQ(result, ks::SubmitResult::kQueueFull);
  EXPECT_FALSE(too_big);
  EXPECT_EQ(b.depth(), 1u);  // nothing of the refused request holds a slot
  B::Reservation r = b.admit(2, 0, &result);
  ASSERT_EQ(result, ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.depth(), 3u);  // reserved slots count before anything is queued
  std::vector<B::Task> parts;
  parts.push_back(task(2));
  parts.push_back(task(3));
  EXPECT_EQ(b.enqueue(r, std::move(parts)), ks::SubmitResult::kAccepted);
  {
    B::Reservation refused = b.admit(1, 0, &result);  // 3 of 3 slots are taken
    EXPECT_EQ(result, ks::SubmitResult::kQueueFull);
  }
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(4));
  EXPECT_EQ(rec.batches.size(), 4u);
}

// Finding 6: queued bytes are bounded; a reservation gives its bytes back when dropped, and the
// queued tasks' own bytes replace the reservation's.
TEST(Batcher, QueueBytesAreBoundedAndReservationsGiveThemBack) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  o.max_queue_bytes = 1000;
  B b(o, rec.hooks());
  ASSERT_EQ(b.submit(task(0)), ks::SubmitResult::kAccepted);
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  ks::SubmitResult result;
  {
    B::Reservation r = b.admit(1, 900, &result);
    ASSERT_EQ(result, ks::SubmitResult::kAccepted);
    EXPECT_EQ(b.bytes(), 900);
    B::Reservation refused = b.admit(1, 200, &result);
    EXPECT_EQ(result, ks::SubmitResult::kQueueBytesFull);
  }  // released unused
  EXPECT_EQ(b.bytes(), 0);
  B::Reservation r = b.admit(1, 900, &result);
  ASSERT_EQ(result, ks::SubmitResult::kAccepted);
  auto t = task(1);
  t.bytes = 100;  // decoded: only what the model needs stays
  std::vector<B::Task> tasks;
  tasks.push_back(std::move(t));
  ASSERT_EQ(b.enqueue(r, std::move(tasks)), ks::SubmitResult::kAccepted);
  EXPECT_EQ(b.bytes(), 100);
  EXPECT_EQ(b.admit(1, 900, &result).bytes(), 900);
  EXPECT_EQ(result, ks::SubmitResult::kAccepted);
  gate.set_value();
  ASSERT_TRUE(rec.wait_for(2));
  while (b.bytes() != 0) std::this_thread::sleep_for(1ms);
}

// Finding 9: after the shutdown deadline what is still queued is dropped, not run.
TEST(Batcher, ShutdownDeadlineDropsWhatIsStillQueued) {
  Recorder rec;
  std::promise<void> gate;
  rec.release = gate.get_future().share();
  ks::BatcherOptions o;
  o.max_batch_size = 1;
  o.max_queue_delay = 0ms;
  B b(o, rec.hooks());
  b.submit(task(0));  // running, blocked
  while (b.depth() != 0) std::this_thread::sleep_for(1ms);
  for (int i = 1; i <= 3; ++i) b.submit(task(i));
  std::thread release([&] {
    std::this_thread::sleep_for(50ms);
    gate.set_value();
  });
  b.shutdown(std::chrono::steady_clock::now() + 20ms);
  release.join();
  ASSERT_EQ(rec.batches.size(), 1u);
  EXPECT_EQ(rec.dropped.size(), 3u);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(rec.dropped.at(i), ks::DropReason::kShutdown);
}
