#pragma once
/// Failure isolation of a batch: a request whose input makes the model fail must fail alone,
/// and its batch-mates must be answered. Generic (no gRPC, no LibTorch), tested on its own.

#include <cstddef>
#include <exception>
#include <iterator>
#include <vector>

namespace kdeserve::server {

/// Runs run(batch); when it throws, splits the batch in halves and runs each again, down to
/// single requests: fail(request, error) then answers the one that still fails. A batch with one
/// failing request of n costs at most 2·⌈log2 n⌉ more runs, and the innocent requests get the
/// results the whole batch would have given them (each item's output depends only on its own
/// inputs and seeds). on_split(batch, error) is told before each split (for the log).
template <typename T, typename Run, typename Fail, typename OnSplit>
void run_isolating(std::vector<T>& batch, const Run& run, const Fail& fail,
                   const OnSplit& on_split) {
  std::exception_ptr error;
  try {
    run(batch);
    return;
  } catch (...) {
    error = std::current_exception();
  }
  if (batch.size() == 1) {
    fail(batch.front(), error);
    return;
  }
  on_split(batch, error);
  const auto mid = batch.begin() + static_cast<std::ptrdiff_t>(batch.size() / 2);
  std::vector<T> first(std::make_move_iterator(batch.begin()), std::make_move_iterator(mid));
  std::vector<T> second(std::make_move_iterator(mid), std::make_move_iterator(batch.end()));
  run_isolating(first, run, fail, on_split);
  run_isolating(second, run, fail, on_split);
}

}  // namespace kdeserve::server
