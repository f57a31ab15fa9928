#include "attention/threads.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace kdeserve::attention {

int set_num_threads(int n) {
  TORCH_CHECK(n >= 1, "set_num_threads: needs n >= 1, got ", n);
  setenv("BLIS_NUM_THREADS", std::to_string(n).c_str(), /*overwrite=*/0);
  at::set_num_threads(n);
  return at::get_num_threads();
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace kdeserve::attention
