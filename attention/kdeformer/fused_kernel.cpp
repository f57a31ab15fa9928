#include "attention/kdeformer/fused_kernel.h"

#include <algorithm>

namespace kdeserve::attention::kdeformer::kernel {

// The variants (fused_kernel_<isa>.cpp, one body: fused_kernel_impl.h).
#define KDESERVE_DECLARE_VARIANT(isa)                                        \
  namespace isa {                                                            \
  void pack_samples(const Problem& problem, int64_t begin, int64_t end);     \
  void run_tasks(const Problem& problem, int64_t begin, int64_t end);        \
  }
KDESERVE_DECLARE_VARIANT(baseline)
#ifdef KDESERVE_KERNEL_X86
KDESERVE_DECLARE_VARIANT(avx2)
KDESERVE_DECLARE_VARIANT(avx512)
#endif
#undef KDESERVE_DECLARE_VARIANT

void counting_sort(const int64_t* ranks, int64_t n, int64_t buckets, int64_t* order) {
  std::vector<int64_t> start(buckets + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[ranks[i] + 1];
  for (int64_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
  for (int64_t i = 0; i < n; ++i) order[start[ranks[i]]++] = i;
}

void sort_rows(const Problem& pb, int64_t begin, int64_t end) {
  for (int64_t g = begin; g < end; ++g) {
    for (int64_t p = 0; p < pb.nq; ++p) {
      const float* src = pb.q + (g * pb.nq + pb.q_order[g * pb.nq + p]) * pb.dim;
      float* dst = pb.q_sorted + (g * pb.nq + p) * pb.dim;
      for (int64_t d = 0; d < pb.dim; ++d) dst[d] = src[d] * pb.scale;
    }
    for (int64_t p = 0; p < pb.nk; ++p) {
      const int64_t key = g * pb.nk + pb.k_order[g * pb.nk + p];
      std::copy(pb.k + key * pb.dim, pb.k + (key + 1) * pb.dim, pb.k_sorted + (g * pb.nk + p) * pb.dim);
      std::copy(pb.v + key * pb.dv, pb.v + (key + 1) * pb.dv, pb.v_sorted + (g * pb.nk + p) * pb.dv);
    }
  }
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
