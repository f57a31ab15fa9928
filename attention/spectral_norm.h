#pragma once
/// Spectral-norm utilities for measuring attention errors (‖Ã − A‖_op / ‖A‖_op).

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kdeserve::attention {

/// Largest singular value of x [M, N] (or of each matrix of x [..., M, N], returned as a tensor of
/// shape [...]) by power iteration on the smaller Gram matrix (xᵀx or x xᵀ) from a seeded
/// Gaussian start; stops after `iters`
/// steps or when the estimate changes by less than `rtol` (relative). Computed in float64.
at::Tensor spectral_norm(const at::Tensor& x, int64_t iters = 2000, double rtol = 1e-13,
                         uint64_t seed = 0);

/// ‖estimate − reference‖_op / ‖reference‖_op for 2-D matrices [M, N].
double relative_spectral_error(const at::Tensor& estimate, const at::Tensor& reference,
                               int64_t iters = 2000, double rtol = 1e-13);

}  // namespace kdeserve::attention
