#pragma once
/// Thread configuration of the math libraries behind LibTorch.

namespace kdeserve::attention {

/// Sets LibTorch's intra-op threads to n (>= 1) and, unless the environment already sets it,
/// BLIS_NUM_THREADS=n: BLIS (the BLAS selected by scripts/install_deps.sh) runs single-threaded
/// otherwise and reads the variable once, at its first call, so call this before any tensor math
/// (at start-up). Returns the thread count LibTorch reports afterwards.
int set_num_threads(int n);

/// All hardware threads of the machine (at least 1).
int hardware_threads();

}  // namespace kdeserve::attention
