#pragma once
// Internal to server/engine/: the one translation of LibTorch errors at the engine boundary.

#include <c10/util/Exception.h>

#include <exception>
#include <utility>

#include "server/errors.h"

namespace kdeserve::server::engine_detail {

/// c10::Error (and subclasses) → LibTorchError with the same what() and its
/// what_without_backtrace(); other exceptions pass unchanged.
inline LibTorchError to_libtorch_error(const c10::Error& e) {
  return LibTorchError(e.what(), e.what_without_backtrace());
}

/// Runs f() and rethrows a c10::Error as LibTorchError.
template <typename F>
decltype(auto) translating(F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const c10::Error& e) {
    throw to_libtorch_error(e);
  }
}

/// The current exception, a c10::Error translated (for errors kept in results).
inline std::exception_ptr current_translated() {
  try {
    throw;
  } catch (const c10::Error& e) {
    return std::make_exception_ptr(to_libtorch_error(e));
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace kdeserve::server::engine_detail
