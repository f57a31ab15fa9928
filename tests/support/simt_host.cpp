#include "tests/support/simt_host.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace kdeserve::simt {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr unsigned kWarp = 32;

struct Thread {
  ucontext_t context;
  std::vector<char> stack;
  Dim3 idx;
  bool done = false;
  unsigned shuffles = 0;  // this thread's shuffle count: picks the slot buffer
};

struct Block {
  ucontext_t scheduler;
  std::vector<Thread> threads;
  std::vector<float> slots[2];  // shuffle values, double-buffered
  std::vector<unsigned char> shared;
  Dim3 idx;
  unsigned current = 0;
  const std::function<void()>* body = nullptr;
};

Block* g_block = nullptr;

void thread_entry() {
  (*g_block->body)();
  g_block->threads[g_block->current].done = true;
  // uc_link returns to the scheduler.
}

}  // namespace

const Dim3& thread_idx() { return g_block->threads[g_block->current].idx; }
const Dim3& block_idx() { return g_block->idx; }
void* dynamic_shared() { return g_block->shared.data(); }

void sync_threads() {
  Thread& t = g_block->threads[g_block->current];
  swapcontext(&t.context, &g_block->scheduler);
}

float shfl_xor(float value, int lane_mask) {
  Thread& t = g_block->threads[g_block->current];
  std::vector<float>& slot = g_block->slots[t.shuffles++ & 1];
  const unsigned me = g_block->current;
  slot[me] = value;
  // Each buffer is written again only two barriers later, after every thread has read it.
  sync_threads();
  const unsigned lane = me % kWarp, base = me - lane;
  return slot[base + ((lane ^ static_cast<unsigned>(lane_mask)) % kWarp)];
}

namespace {

// One block: its threads from their start to their end, a round of context switches per
// barrier. Separate from launch() so that nothing it changes lives across the switches.
void run_block(Block& block, unsigned b, std::size_t shared_bytes) {
  const unsigned threads = static_cast<unsigned>(block.threads.size());
  block.idx.x = b;
  block.shared.assign(shared_bytes, 0);
  for (unsigned i = 0; i < threads; ++i) {
    Thread& t = block.threads[i];
    t.idx.x = i;
    t.done = false;
    t.shuffles = 0;
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack.data();
    t.context.uc_stack.ss_size = t.stack.size();
    t.context.uc_link = &block.scheduler;
    makecontext(&t.context, thread_entry, 0);
  }
  // Rounds: each thread runs to its next barrier (or its end); a round ends a barrier.
  for (;;) {
    unsigned finished = 0;
    for (unsigned i = 0; i < threads; ++i) {
      if (block.threads[i].done) {
        ++finished;
        continue;
      }
      block.current = i;
      swapcontext(&block.scheduler, &block.threads[i].context);
      if (block.threads[i].done) ++finished;
    }
    if (finished == threads) return;
    if (finished != 0) {
      std::fprintf(stderr,
                   "simt::launch: block %u: %u of %u threads returned while the others wait at "
                   "a barrier (divergent __syncthreads)\n",
                   b, finished, threads);
      std::abort();
    }
  }
}

}  // namespace

void launch(unsigned grid, unsigned threads, std::size_t shared_bytes,
            const std::function<void()>& body) {
  Block block;
  block.threads.resize(threads);
  for (Thread& t : block.threads) t.stack.resize(kStackBytes);
  block.slots[0].assign(threads, 0.0f);
  block.slots[1].assign(threads, 0.0f);
  block.body = &body;
  Block* const previous = g_block;
  g_block = &block;
  for (unsigned b = 0; b < grid; ++b) run_block(block, b, shared_bytes);
  g_block = previous;
}

}  // namespace kdeserve::simt
