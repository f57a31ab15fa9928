// The LSH hash of fused_kernel.h (hash_ranks), compiled by fused_hash_<isa>.cpp with
// contraction into FMA off: every variant then rounds exactly as the baseline one, so the ATen
// path and every kernel variant put each row in the same bucket.
#include <algorithm>
#include <cstdint>
#include <vector>

#ifndef KDESERVE_KERNEL_ISA
#error "define KDESERVE_KERNEL_ISA (the namespace of this variant) before including this file"
#endif

namespace kdeserve::attention::kdeformer::kernel::KDESERVE_KERNEL_ISA {

template <typename T>
void hash_ranks(const T* x, int64_t n, int64_t dim, const T* proj, int64_t r,
                const int64_t* table, int64_t* ranks) {
  // Tiles of 8 rows × 8 hyperplanes kept in registers, each product summed over d in index
  // order: the compiler vectorises across hyperplanes, and every variant rounds alike.
  constexpr int64_t kRows = 8, kPlanes = 8;
  const int64_t rp = (r + kPlanes - 1) / kPlanes * kPlanes;
  std::vector<T> p(dim * rp, T(0));  // [D, rp], zero-padded hyperplanes
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t j = 0; j < r; ++j) p[d * rp + j] = proj[d * r + j];
  }
  for (int64_t i0 = 0; i0 < n; i0 += kRows) {
    const int64_t rows = std::min(kRows, n - i0);
    const T* xr[kRows];
    for (int64_t t = 0; t < kRows; ++t) xr[t] = x + (i0 + std::min(t, rows - 1)) * dim;
    int64_t code[kRows] = {};
    for (int64_t j0 = 0; j0 < rp; j0 += kPlanes) {
      typedef T Planes __attribute__((vector_size(kPlanes * sizeof(T)), aligned(sizeof(T)),
                                      may_alias));
      Planes acc[kRows];
#pragma GCC unroll 8
      for (int64_t t = 0; t < kRows; ++t) acc[t] = Planes{};
      for (int64_t d = 0; d < dim; ++d) {
        const Planes pd = *reinterpret_cast<const Planes*>(p.data() + d * rp + j0);
#pragma GCC unroll 8
        for (int64_t t = 0; t < kRows; ++t) acc[t] += xr[t][d] * pd;
      }
      for (int64_t t = 0; t < kRows; ++t) {
        for (int64_t l = 0; l < kPlanes && j0 + l < r; ++l) {
          code[t] |= static_cast<int64_t>(acc[t][l] > T(0)) << (j0 + l);
        }
      }
    }
    for (int64_t t = 0; t < rows; ++t) ranks[i0 + t] = table[code[t]];
  }
}

template void hash_ranks<float>(const float*, int64_t, int64_t, const float*, int64_t,
                                const int64_t*, int64_t*);
template void hash_ranks<double>(const double*, int64_t, int64_t, const double*, int64_t,
                                 const int64_t*, int64_t*);

}  // namespace kdeserve::attention::kdeformer::kernel::KDESERVE_KERNEL_ISA
