#include "attention/kdeformer/fused_kernel.h"

namespace kdeserve::attention::kdeformer::kernel {

// The variants (fused_kernel_<isa>.cpp, one body: fused_kernel_impl.h).
#define KDESERVE_DECLARE_VARIANT(isa)                                        \
  namespace isa {                                                            \
  void pack_samples(const Problem& problem, int64_t begin, int64_t end);     \
  void run_tasks(const Problem& problem, int64_t begin, int64_t end);        \
  template <typename T>                                                      \
  void hash_ranks(const T* x, int64_t n, int64_t dim, const T* proj, int64_t r, \
                  const int64_t* table, int64_t* ranks);                     \
  }
KDESERVE_DECLARE_VARIANT(baseline)
#ifdef KDESERVE_KERNEL_X86
KDESERVE_DECLARE_VARIANT(avx2)
KDESERVE_DECLARE_VARIANT(avx512)
#endif
#undef KDESERVE_DECLARE_VARIANT

template <typename T>
void hash_ranks(const T* x, int64_t n, int64_t dim, const T* proj, int64_t r,
                const int64_t* table, int64_t* ranks) {
#ifdef KDESERVE_KERNEL_X86
  if (best_isa() != Isa::kBaseline) return avx2::hash_ranks(x, n, dim, proj, r, table, ranks);
#endif
  baseline::hash_ranks(x, n, dim, proj, r, table, ranks);
}

template void hash_ranks<float>(const float*, int64_t, int64_t, const float*, int64_t,
                                const int64_t*, int64_t*);
template void hash_ranks<double>(const double*, int64_t, int64_t, const double*, int64_t,
                                 const int64_t*, int64_t*);

void counting_sort(const int64_t* ranks, int64_t n, int64_t buckets, int64_t* order) {
  std::vector<int64_t> start(buckets + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[ranks[i] + 1];
  for (int64_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
  for (int64_t i = 0; i < n; ++i) order[start[ranks[i]]++] = i;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out = {Isa::kBaseline};
#ifdef KDESERVE_KERNEL_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    out.push_back(Isa::kAvx2);
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
      out.push_back(Isa::kAvx512);
    }
  }
#endif
  return out;
}

Isa best_isa() {
  static const Isa best = supported_isas().back();
  return best;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kBaseline:
      break;
  }
  return "baseline";
}

void pack_samples(const Problem& problem, int64_t begin, int64_t end, Isa isa) {
#ifdef KDESERVE_KERNEL_X86
  if (isa == Isa::kAvx512) return avx512::pack_samples(problem, begin, end);
  if (isa == Isa::kAvx2) return avx2::pack_samples(problem, begin, end);
#endif
  (void)isa;
  baseline::pack_samples(problem, begin, end);
}

void run_tasks(const Problem& problem, int64_t begin, int64_t end, Isa isa) {
#ifdef KDESERVE_KERNEL_X86
  if (isa == Isa::kAvx512) return avx512::run_tasks(problem, begin, end);
  if (isa == Isa::kAvx2) return avx2::run_tasks(problem, begin, end);
#endif
  (void)isa;
  baseline::run_tasks(problem, begin, end);
}

}  // namespace kdeserve::attention::kdeformer::kernel
