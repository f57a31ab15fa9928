// Google Benchmark: exact attention vs KDEformer (float32) at the shapes, with peak extra
// memory, plus the machine's sgemm throughput, and a closing table of speedups measured in the
// same run. One thread count per process (BLIS fixes its threads at its first call):
// `attention_bench --threads 1` and `--threads 2`; bench/run_attention_bench.sh runs both.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/threads.h"
#include "tests/support/peak_memory.h"

namespace {

namespace att = kdeserve::attention;
using kdeserve::testing::PeakMemoryScope;

struct Shape {
  std::string name;
  int64_t batch, nq, nk, d, dv, bucket, samples;
};

std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int64_t n : {1024, 2048, 4096, 8192, 16384}) {
    s.push_back({"n=" + std::to_string(n), 1, n, n, 64, 64, 64, 128});
  }
  s.push_back({"t2t_layer1", 8, 3136, 3136, 64, 64, 32, 98});
  s.push_back({"biggan", 1, 4096, 1024, 64, 256, 64, 128});
  return s;
}

struct Figures {
  double seconds = 0;
  double peak_mib = 0;
  double flops = 0;
};
std::map<std::string, Figures> g_figures;  // "<shape>/<method>/t=<threads>"

att::AttentionOptions options_for(const Shape& s, att::Method method) {
  att::AttentionOptions o(method);
  o.kdeformer().bucket_size(s.bucket).sample_size(s.samples);
  return o;
}

void bm_attention(benchmark::State& state, Shape s, att::Method method, int threads) {
  at::Generator gen = at::detail::createCPUGenerator(42);
  const at::TensorOptions f32(at::kFloat);
  const at::Tensor q = at::randn({s.batch, 1, s.nq, s.d}, gen, f32).mul_(0.5);
  const at::Tensor k = at::randn({s.batch, 1, s.nk, s.d}, gen, f32).mul_(0.5);
  const at::Tensor v = at::randn({s.batch, 1, s.nk, s.dv}, gen, f32);
  const att::AttentionOptions options = options_for(s, method);
  att::AttentionCall call;
  int64_t peak = 0;
  {
    PeakMemoryScope scope;  // untimed warm-up call that measures peak extra memory
    benchmark::DoNotOptimize(att::attention(q, k, v, options, call));
    peak = scope.peak_bytes();
  }
  for (auto _ : state) {
    ++call.seed;
    benchmark::DoNotOptimize(att::attention(q, k, v, options, call));
  }
  const double flops = 2.0 * s.batch * s.nq * s.nk * (s.d + s.dv);
  state.counters["peak_MiB"] = static_cast<double>(peak) / (1 << 20);
  if (method == att::Method::kExact) {
    state.counters["flop/s"] =
        benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  }
  g_figures[s.name + "/" + att::to_string(method) + "/t=" + std::to_string(threads)] = {
      0, static_cast<double>(peak) / (1 << 20), flops};
}

void bm_sgemm(benchmark::State& state, int threads) {
  const int64_t n = 2048;
  const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::Tensor c = at::empty({n, n});
  for (auto _ : state) at::mm_out(c, a, b);
  state.counters["flop/s"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}

// Keeps each run's mean wall time for the closing table.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      times_[name.substr(0, name.find("/min_time"))] = r.GetAdjustedRealTime() * 1e-3;  // ms → s
    }
  }
  double seconds(const std::string& name) const {
    auto it = times_.find(name);
    return it == times_.end() ? 0 : it->second;
  }

 private:
  std::map<std::string, double> times_;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = att::hardware_threads();
  // Our own flag; the rest go to Google Benchmark.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--threads=", 0) == 0) {
      threads = std::stoi(a.substr(10));
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  att::set_num_threads(threads);
  kdeserve::testing::PeakMemory::install();
  const std::vector<int> thread_counts = {threads};
  for (int t : thread_counts) {
    benchmark::RegisterBenchmark(("sgemm_2048/t=" + std::to_string(t)).c_str(), bm_sgemm, t)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(0.5);
  }
  for (const Shape& s : shapes()) {
    for (int t : thread_counts) {
      for (att::Method m : {att::Method::kExact, att::Method::kKdeformer}) {
        const std::string name = s.name + "/" + att::to_string(m) + "/t=" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), bm_attention, s, m, t)
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.5)
            ->UseRealTime();
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  std::printf("\nSummary (same run): time per call, KDEformer speedup over exact, peak extra memory\n");
  std::printf("%-12s %3s %12s %12s %9s %11s %11s %10s %8s\n", "shape", "thr", "exact ms", "kde ms",
              "speedup", "exact MiB", "kde MiB", "exact GF/s", "% sgemm");
  for (const Shape& s : shapes()) {
    for (int t : thread_counts) {
      const std::string base = s.name + "/";
      const std::string tt = "/t=" + std::to_string(t);
      const double te = reporter.seconds(base + "exact" + tt);
      const double tk = reporter.seconds(base + "kdeformer" + tt);
      const double sgemm_s = reporter.seconds("sgemm_2048" + tt);
      if (te == 0 || tk == 0) continue;
      const Figures& fe = g_figures[base + "exact" + tt];
      const Figures& fk = g_figures[base + "kdeformer" + tt];
      const double gf = fe.flops / te * 1e-9;
      const double sgemm_gf = sgemm_s > 0 ? 2.0 * 2048 * 2048 * 2048 / sgemm_s * 1e-9 : 0;
      std::printf("%-12s %3d %12.2f %12.2f %8.1fx %11.1f %11.1f %10.1f %7.0f%%\n", s.name.c_str(),
                  t, te * 1e3, tk * 1e3, te / tk, fe.peak_mib, fk.peak_mib, gf,
                  sgemm_gf > 0 ? 100 * gf / sgemm_gf : 0.0);
    }
  }
  for (int t : thread_counts) {
    const double s = reporter.seconds("sgemm_2048/t=" + std::to_string(t));
    if (s > 0) std::printf("sgemm 2048^3, %d thread(s): %.1f GFLOP/s\n", t, 2.0 * 2048 * 2048 * 2048 / s * 1e-9);
  }
  benchmark::Shutdown();
  return 0;
}
