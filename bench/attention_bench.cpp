// Google Benchmark: exact attention on each exact backend (ours, chunked; SDPA's fused kernel)
// vs KDEformer (float32) at the paper's shapes, with peak extra memory, plus the machine's sgemm
// throughput, and a closing table measured in the same run: KDEformer's speedup over the
// FASTEST exact backend, and each exact backend's share of sgemm.
//
//   attention_bench [--threads N] [--device cpu|cuda] [--max-n N] [--csv FILE] [gbench flags]
//
// One thread count per process (BLIS fixes its threads at its first call);
// bench/run_attention_bench.sh runs 1 thread and every core. On CUDA (scripts/gpu_check.sh)
// every timed call ends with a device synchronisation, memory is the caching allocator's peak,
// and the shapes go up to n = 65536.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <torch/cuda.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/sdpa.h"
#include "attention/threads.h"
#include "tests/support/device_memory.h"
#include "tests/support/peak_memory.h"

namespace {

namespace att = kdeserve::attention;
using kdeserve::testing::PeakMemoryScope;

struct Shape {
  std::string name;
  int64_t batch, nq, nk, d, dv, bucket, samples;
};

std::vector<Shape> shapes(int64_t max_n) {
  std::vector<Shape> s;
  for (int64_t n = 1024; n <= max_n; n *= 2) {
    s.push_back({"n=" + std::to_string(n), 1, n, n, 64, 64, 64, 128});
  }
  s.push_back({"t2t_layer1", 8, 3136, 3136, 64, 64, 32, 98});
  s.push_back({"biggan", 1, 4096, 1024, 64, 256, 64, 128});
  return s;
}

// The variants timed per shape: every exact backend, then KDEformer.
struct Variant {
  std::string name;  // "exact-chunked", "exact-sdpa", "kdeformer"
  att::AttentionOptions options;
};

std::vector<Variant> variants(const Shape& s) {
  att::AttentionOptions chunked(att::Method::kExact), sdpa(att::Method::kExact),
      kde(att::Method::kKdeformer);
  chunked.exact().backend(att::ExactBackend::kChunked);
  sdpa.exact().backend(att::ExactBackend::kSdpa);
  kde.kdeformer().bucket_size(s.bucket).sample_size(s.samples);
  return {{"exact-chunked", chunked}, {"exact-sdpa", sdpa}, {"kdeformer", kde}};
}

struct Figures {
  double peak_mib = 0;
  double flops = 0;     // of exact attention: 2 · B · Nq · Nk · (D + Dv)
  std::string backend;  // what the report says ran
  bool ran = false;     // false: the variant does not exist here (e.g. SDPA on LibTorch 1.13)
};
std::map<std::string, Figures> g_figures;  // "<shape>/<variant>/t=<threads>"
at::Device g_device = at::kCPU;

void sync() {
  if (g_device.is_cuda()) torch::cuda::synchronize();
}

void bm_attention(benchmark::State& state, Shape s, Variant variant, std::string key) {
  at::Generator gen = at::detail::createCPUGenerator(42);
  const at::TensorOptions f32(at::kFloat);
  const at::Tensor q = at::randn({s.batch, 1, s.nq, s.d}, gen, f32).mul_(0.5).to(g_device);
  const at::Tensor k = at::randn({s.batch, 1, s.nk, s.d}, gen, f32).mul_(0.5).to(g_device);
  const at::Tensor v = at::randn({s.batch, 1, s.nk, s.dv}, gen, f32).to(g_device);
  att::AttentionReport report;
  att::AttentionCall call;
  call.report = &report;
  Figures& fig = g_figures[key];
  fig.flops = 2.0 * s.batch * s.nq * s.nk * (s.d + s.dv);
  {
    // Untimed warm-up call that measures peak extra memory.
    PeakMemoryScope scope;
    kdeserve::testing::DevicePeakScope device_scope(g_device);
    benchmark::DoNotOptimize(att::attention(q, k, v, variant.options, call));
    sync();
    fig.peak_mib = static_cast<double>(g_device.is_cuda() ? device_scope.peak_bytes()
                                                          : scope.peak_bytes()) /
                   (1 << 20);
  }
  fig.backend = report.backend;
  if (variant.name == "exact-sdpa" && report.backend.rfind("sdpa-", 0) != 0) {
    state.SkipWithError(("no fused SDPA kernel: " + report.reason).c_str());
    return;
  }
  fig.ran = true;
  for (auto _ : state) {
    ++call.seed;
    benchmark::DoNotOptimize(att::attention(q, k, v, variant.options, call));
    sync();
  }
  state.counters["peak_MiB"] = fig.peak_mib;
  if (variant.name != "kdeformer") {
    state.counters["flop/s"] =
        benchmark::Counter(fig.flops, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(report.backend);
}

void bm_sgemm(benchmark::State& state) {
  const int64_t n = g_device.is_cuda() ? 8192 : 2048;
  const at::Tensor a = at::randn({n, n}).to(g_device), b = at::randn({n, n}).to(g_device);
  at::Tensor c = at::empty({n, n}, a.options());
  for (auto _ : state) {
    at::mm_out(c, a, b);
    sync();
  }
  state.counters["flop/s"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["n"] = static_cast<double>(n);
}

// Keeps each run's mean wall time (seconds) for the closing table.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const std::string name = r.benchmark_name();
      times_[name.substr(0, name.find("/min_time"))] = r.GetAdjustedRealTime() * 1e-3;
      if (name.rfind("sgemm", 0) == 0) sgemm_n_ = r.counters.at("n");
    }
  }
  double seconds(const std::string& name) const {
    auto it = times_.find(name);
    return it == times_.end() ? 0 : it->second;
  }
  double sgemm_n() const { return sgemm_n_; }

 private:
  std::map<std::string, double> times_;
  double sgemm_n_ = 0;
};

struct Args {
  int threads = att::hardware_threads();
  std::string device = "cpu";
  int64_t max_n = 16384;
  std::string csv;
};

// Our own flags; the rest stay for Google Benchmark.
Args parse_args(int& argc, char** argv) {
  Args a;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&](const std::string& flag, std::string& out) {
      if (s.rfind(flag + "=", 0) == 0) {
        out = s.substr(flag.size() + 1);
        return true;
      }
      if (s == flag && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      return false;
    };
    std::string v;
    if (value("--threads", v)) {
      a.threads = std::stoi(v);
    } else if (value("--device", v)) {
      a.device = v;
    } else if (value("--max-n", v)) {
      a.max_n = std::stoll(v);
    } else if (value("--csv", v)) {
      a.csv = v;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  if (args.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "attention_bench: --device cuda, but this build or machine has no CUDA\n");
    return 2;
  }
  g_device = args.device == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  att::set_num_threads(args.threads);
  kdeserve::testing::PeakMemory::install();
  const std::string tt = "/t=" + std::to_string(args.threads);
  const std::string dev = g_device.is_cuda() ? "/cuda" : "";
  const std::string sgemm_name = "sgemm" + dev + tt;
  benchmark::RegisterBenchmark(sgemm_name.c_str(), bm_sgemm)
      ->Unit(benchmark::kMillisecond)
      ->MinTime(0.5)
      ->UseRealTime();
  const std::vector<Shape> all = shapes(args.max_n);
  for (const Shape& s : all) {
    for (const Variant& variant : variants(s)) {
      const std::string name = s.name + "/" + variant.name + dev + tt;
      benchmark::RegisterBenchmark(name.c_str(), bm_attention, s, variant, name)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.5)
          ->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  const double sgemm_s = reporter.seconds(sgemm_name);
  const double sgemm_n = reporter.sgemm_n();
  const double sgemm_gf = sgemm_s > 0 ? 2.0 * sgemm_n * sgemm_n * sgemm_n / sgemm_s * 1e-9 : 0;
  std::printf("\nSummary (same run, %s, %d thread(s)): time per call; KDEformer's speedup over the "
              "fastest exact backend; exact GFLOP/s as %% of sgemm\n",
              g_device.str().c_str(), args.threads);
  std::printf("%-11s %10s %10s %10s %-9s %9s %8s %8s %9s %9s\n", "shape", "chunked ms", "sdpa ms",
              "kde ms", "fastest", "speedup", "chk %sg", "sdpa %sg", "exact MiB", "kde MiB");
  std::ofstream csv;
  if (!args.csv.empty()) {
    csv.open(args.csv);
    csv << "device,threads,shape,chunked_ms,sdpa_ms,sdpa_backend,kdeformer_ms,fastest_exact,"
           "speedup_vs_fastest,chunked_pct_sgemm,sdpa_pct_sgemm,exact_peak_mib,"
           "kdeformer_peak_mib,sgemm_gflops\n";
  }
  for (const Shape& s : all) {
    auto key = [&](const std::string& v) { return s.name + "/" + v + dev + tt; };
    const double tc = reporter.seconds(key("exact-chunked"));
    const double ts = g_figures[key("exact-sdpa")].ran ? reporter.seconds(key("exact-sdpa")) : 0;
    const double tk = reporter.seconds(key("kdeformer"));
    if (tc == 0 || tk == 0) continue;
    const bool sdpa_faster = ts > 0 && ts < tc;
    const double fastest = sdpa_faster ? ts : tc;
    const Figures& fc = g_figures[key("exact-chunked")];
    const Figures& fs = g_figures[key("exact-sdpa")];
    const Figures& fk = g_figures[key("kdeformer")];
    auto pct = [&](double t) { return t > 0 && sgemm_gf > 0 ? 100 * fc.flops / t * 1e-9 / sgemm_gf : 0.0; };
    const double exact_mib = sdpa_faster ? fs.peak_mib : fc.peak_mib;
    std::printf("%-11s %10.2f %10s %10.2f %-9s %8.1fx %7.0f%% %7s %9.1f %9.1f\n", s.name.c_str(),
                tc * 1e3, ts > 0 ? std::to_string(ts * 1e3).substr(0, 8).c_str() : "n/a",
                tk * 1e3, sdpa_faster ? "sdpa" : "chunked", fastest / tk, pct(tc),
                ts > 0 ? (std::to_string(static_cast<int>(pct(ts) + 0.5)) + "%").c_str() : "n/a",
                exact_mib, fk.peak_mib);
    if (csv) {
      csv << g_device.str() << ',' << args.threads << ',' << s.name << ',' << tc * 1e3 << ','
          << ts * 1e3 << ',' << fs.backend << ',' << tk * 1e3 << ','
          << (sdpa_faster ? "sdpa" : "chunked") << ',' << fastest / tk << ',' << pct(tc) << ','
          << pct(ts) << ',' << exact_mib << ',' << fk.peak_mib << ',' << sgemm_gf << '\n';
    }
  }
  std::printf("sgemm %.0f^3 on %s, %d thread(s): %.1f GFLOP/s\n", sgemm_n, g_device.str().c_str(),
              args.threads, sgemm_gf);
  benchmark::Shutdown();
  return 0;
}
