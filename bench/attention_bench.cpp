// Google Benchmark: every attention method at the model shapes, with the settings the papers
// use there (bench/budget.cpp paper_settings), against exact attention on each exact backend
// (ours, chunked; SDPA's fused kernel), plus the machine's sgemm throughput. The closing table,
// measured in the same run, gives each method's speedup over the FASTEST exact backend of the
// shape, its peak extra memory, its per-query budget m and its knobs; exact backends also get
// their share of sgemm. A method that throws (e.g. a placeholder) is a "failed" row.
//
//   attention_bench [--threads N] [--device cpu|cuda] [--max-n N] [--shapes a,b]
//                   [--methods a,b] [--require a,b] [--min-time S] [--csv FILE] [gbench flags]
//
// --require: methods whose failure on any shape is an error (exit 4), for the smoke ctest.
//
// Shapes: t2t_layer1 (batch 8, 3136², D 64, scale 1/√147), t2t_layer2 (batch 8, 784², 1/24),
// biggan (4096 × 1024, D 64, Dv 256, scale 1) and n = 8192 (CUDA: 4096) … max-n (D 64, 1/8,
// each options struct's defaults). Peak memory: the untimed warm-up call's peak of tensor
// storage above what was allocated before it, counted by a wrapper around LibTorch's CPU
// allocator (tests/support/peak_memory.h); on CUDA the caching allocator's peak statistic.
//
// One thread count per process (BLIS fixes its threads at its first call);
// bench/run_attention_bench.sh runs 1 thread and every core. On CUDA (scripts/gpu_check.sh)
// every timed call ends with a device synchronisation, the shapes go up to n = 131072, and a
// reference row times SDPA on bfloat16 inputs (sdpa_bf16: flash where it applies).
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/sdpa.h"
#include "attention/threads.h"
#include "bench/budget.h"
#include "tests/support/device_memory.h"
#include "tests/support/peak_memory.h"

namespace {

namespace att = kdeserve::attention;
namespace kb = kdeserve::bench;
using kdeserve::testing::PeakMemoryScope;

struct Shape {
  std::string name;
  int64_t batch, nq, nk, d, dv;
  kb::Protocol protocol;
};

at::Device g_device = at::kCPU;
// The bfloat16 SDPA reference row (CUDA runs only).
const char* const kSdpaBf16 = "sdpa_bf16";

std::vector<Shape> shapes(int64_t max_n) {
  std::vector<Shape> s = {{"t2t_layer1", 8, 3136, 3136, 64, 64, kb::Protocol::kT2tLayer1},
                          {"t2t_layer2", 8, 784, 784, 64, 64, kb::Protocol::kT2tLayer2},
                          {"biggan", 1, 4096, 1024, 64, 256, kb::Protocol::kBigGan}};
  // On CUDA from n = 4096, where exact attention is still cheap for the GPU.
  for (int64_t n = g_device.is_cuda() ? 4096 : 8192; n <= max_n; n *= 2) {
    s.push_back({"n=" + std::to_string(n), 1, n, n, 64, 64, kb::Protocol::kGeneric});
  }
  return s;
}

struct Figures {
  double peak_mib = 0;
  double flops = 0;           // of exact attention: 2 · B · Nq · Nk · (D + Dv)
  std::string backend;        // what the report says ran
  std::string status = "ok";  // ok / failed: … / fallback: … / no fused SDPA kernel: …
  bool ran = false;
};
std::map<std::string, Figures> g_figures;  // benchmark name

void sync() {
  if (g_device.is_cuda()) torch::cuda::synchronize();
}

std::string first_line(const std::string& s) {
  const std::string line = s.substr(0, s.find('\n'));
  return line.size() > 120 ? line.substr(0, 120) : line;
}

void bm_attention(benchmark::State& state, Shape s, kb::Budgeted variant, std::string key) {
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
  try {
    // Untimed warm-up call that measures peak extra memory.
    PeakMemoryScope scope;
    kdeserve::testing::DevicePeakScope device_scope(g_device);
    benchmark::DoNotOptimize(att::attention(q, k, v, variant.options, call));
    sync();
    fig.peak_mib =
        static_cast<double>(g_device.is_cuda() ? device_scope.peak_bytes() : scope.peak_bytes()) /
        (1 << 20);
  } catch (const std::exception& e) {
    fig.status = "failed: " + first_line(e.what());
    state.SkipWithError(fig.status.c_str());
    return;
  }
  fig.backend = report.backend;
  if (variant.variant == "exact_sdpa" && report.backend.rfind("sdpa-", 0) != 0) {
    fig.status = "no fused SDPA kernel: " + first_line(report.reason);
    state.SkipWithError(fig.status.c_str());
    return;
  }
  if (report.ran != report.requested) fig.status = "fallback: " + first_line(report.reason);
  fig.ran = true;
  for (auto _ : state) {
    ++call.seed;
    benchmark::DoNotOptimize(att::attention(q, k, v, variant.options, call));
    sync();
  }
  state.counters["peak_MiB"] = fig.peak_mib;
  if (variant.options.method() == att::Method::kExact) {
    state.counters["flop/s"] =
        benchmark::Counter(fig.flops, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(report.backend + (fig.status == "ok" ? "" : " " + fig.status));
}

// SDPA on bfloat16 inputs, the precision GPU users run exact attention in (flash where it
// applies): a reference row beside the float32 ones, not one of the exact backends the
// speedups are taken against. CUDA only.
void bm_sdpa_bf16(benchmark::State& state, Shape s, double scale, std::string key) {
  at::Generator gen = at::detail::createCPUGenerator(42);
  const at::TensorOptions f32(at::kFloat);
  const auto make = [&](int64_t n, int64_t d, double gain) {
    return at::randn({s.batch, 1, n, d}, gen, f32).mul_(gain).to(g_device, at::kBFloat16);
  };
  const at::Tensor q = make(s.nq, s.d, 0.5), k = make(s.nk, s.d, 0.5), v = make(s.nk, s.dv, 1.0);
  Figures& fig = g_figures[key];
  fig.flops = 2.0 * s.batch * s.nq * s.nk * (s.d + s.dv);
  const att::SdpaChoice choice = att::sdpa_choice(q, k, v, scale);
  if (!choice.fused) {
    fig.status = "no fused SDPA kernel: " + first_line(choice.reason);
    state.SkipWithError(fig.status.c_str());
    return;
  }
  fig.backend = "sdpa-" + choice.kernel + "-cuda-bf16";
  {
    kdeserve::testing::DevicePeakScope device_scope(g_device);
    benchmark::DoNotOptimize(att::sdpa_attention(q, k, v, scale));
    sync();
    fig.peak_mib = static_cast<double>(device_scope.peak_bytes()) / (1 << 20);
  }
  fig.ran = true;
  for (auto _ : state) {
    benchmark::DoNotOptimize(att::sdpa_attention(q, k, v, scale));
    sync();
  }
  state.counters["peak_MiB"] = fig.peak_mib;
  state.SetLabel(fig.backend);
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
  double min_time = 0.5;
  std::vector<std::string> shapes;  // empty: all
  std::vector<std::string> methods;
  std::vector<std::string> required;  // must run without failing (exit 4 otherwise)
  std::string csv;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Our own flags; the rest stay for Google Benchmark.
Args parse_args(int& argc, char** argv) {
  Args a;
  std::string methods = "default";
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
    } else if (value("--min-time", v)) {
      a.min_time = std::stod(v);
    } else if (value("--shapes", v)) {
      a.shapes = split(v);
    } else if (value("--methods", v)) {
      methods = v;
    } else if (value("--require", v)) {
      // "exact" is always timed, as exact_chunked and exact_sdpa.
      for (const std::string& m : kb::parse_variants(v)) {
        if (m != "exact") a.required.push_back(m);
      }
    } else if (value("--csv", v)) {
      a.csv = v;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  // The exact backends always run: the speedups are against the fastest of them.
  a.methods = {"exact_chunked", "exact_sdpa"};
  for (const std::string& m : kb::parse_variants(methods)) {
    if (m.rfind("exact", 0) != 0) a.methods.push_back(m);
  }
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
      ->MinTime(args.min_time)
      ->UseRealTime();
  std::vector<Shape> all;
  for (const Shape& s : shapes(args.max_n)) {
    if (args.shapes.empty() ||
        std::find(args.shapes.begin(), args.shapes.end(), s.name) != args.shapes.end()) {
      all.push_back(s);
    }
  }
  std::map<std::string, kb::Budgeted> configured;  // shape/variant
  std::vector<std::string> methods = args.methods;
  if (g_device.is_cuda()) methods.insert(methods.begin() + 2, kSdpaBf16);
  for (const Shape& s : all) {
    for (const std::string& v : methods) {
      if (v == kSdpaBf16) {
        const kb::Budgeted exact = kb::paper_settings("exact_sdpa", s.protocol, s.nq, s.nk);
        kb::Budgeted ref{kSdpaBf16, exact.options, 0, "torch SDPA on bfloat16 inputs (reference)"};
        configured[s.name + "/" + v] = ref;
        const double scale = exact.options.scale().value_or(1.0 / std::sqrt(double(s.d)));
        const std::string name = s.name + "/" + v + dev + tt;
        benchmark::RegisterBenchmark(name.c_str(), bm_sdpa_bf16, s, scale, name)
            ->Unit(benchmark::kMillisecond)
            ->MinTime(args.min_time)
            ->UseRealTime();
        continue;
      }
      const kb::Budgeted b = kb::paper_settings(v, s.protocol, s.nq, s.nk);
      configured[s.name + "/" + v] = b;
      const std::string name = s.name + "/" + v + dev + tt;
      benchmark::RegisterBenchmark(name.c_str(), bm_attention, s, b, name)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(args.min_time)
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
  std::printf(
      "\nSummary (same run, %s, %d thread(s)): float32, time per call; speedup over the "
      "fastest exact backend of the shape; peak extra memory of one call; m per query "
      "(peers.md §8)\n",
      g_device.str().c_str(), args.threads);
  std::ofstream csv;
  if (!args.csv.empty()) {
    csv.open(args.csv);
    csv << "device,threads,shape,variant,method,ms,fastest_exact,fastest_exact_ms,"
           "speedup_vs_fastest,pct_sgemm,peak_mib,m,knobs,backend,status,sgemm_gflops\n";
  }
  bool exact_missing = false;
  for (const Shape& s : all) {
    auto key = [&](const std::string& v) { return s.name + "/" + v + dev + tt; };
    const double tc = reporter.seconds(key("exact_chunked"));
    const double ts = g_figures[key("exact_sdpa")].ran ? reporter.seconds(key("exact_sdpa")) : 0;
    const bool sdpa_faster = ts > 0 && (tc == 0 || ts < tc);
    const double fastest = sdpa_faster ? ts : tc;
    const std::string fastest_name = sdpa_faster ? "sdpa" : "chunked";
    // Without an exact time there is no speedup to report: an error unless filtered out.
    if (fastest == 0 && g_figures.count(key("exact_chunked"))) exact_missing = true;
    std::printf("\n%s (batch %lld, %lld x %lld, D %lld, Dv %lld): fastest exact %s %.2f ms\n",
                s.name.c_str(), static_cast<long long>(s.batch), static_cast<long long>(s.nq),
                static_cast<long long>(s.nk), static_cast<long long>(s.d),
                static_cast<long long>(s.dv), fastest_name.c_str(), fastest * 1e3);
    std::printf("  %-19s %10s %9s %8s %10s %6s  %s\n", "method", "ms", "speedup", "%sgemm",
                "peak MiB", "m", "knobs / status");
    for (const std::string& v : methods) {
      if (!g_figures.count(key(v))) continue;  // filtered out by --benchmark_filter
      const Figures& f = g_figures[key(v)];
      const kb::Budgeted& b = configured[s.name + "/" + v];
      const double t = f.ran ? reporter.seconds(key(v)) : 0;
      const bool exact = b.options.method() == att::Method::kExact && v != kSdpaBf16;
      const double pct = exact && t > 0 && sgemm_gf > 0 ? 100 * f.flops / t * 1e-9 / sgemm_gf : 0;
      const double speedup = t > 0 && fastest > 0 ? fastest / t : 0;
      if (t > 0) {
        std::printf("  %-19s %10.2f %8.2fx %7s %10.1f %6lld  %s%s\n", v.c_str(), t * 1e3, speedup,
                    exact ? (std::to_string(static_cast<int>(pct + 0.5)) + "%").c_str() : "",
                    f.peak_mib, static_cast<long long>(b.m), b.knobs.c_str(),
                    f.status == "ok" ? "" : ("  [" + f.status + "]").c_str());
      } else {
        std::printf("  %-19s %s  (%s)\n", v.c_str(), f.status.c_str(), b.knobs.c_str());
      }
      if (csv) {
        csv << g_device.str() << ',' << args.threads << ',' << s.name << ',' << v << ','
            << att::to_string(b.options.method()) << ',' << t * 1e3 << ',' << fastest_name << ','
            << fastest * 1e3 << ',' << speedup << ',' << pct << ',' << f.peak_mib << ',' << b.m
            << ',' << b.knobs << ',' << f.backend << ',';
        std::string status = f.status;
        std::replace(status.begin(), status.end(), ',', ';');
        csv << status << ',' << sgemm_gf << '\n';
      }
    }
  }
  std::printf("sgemm %.0f^3 on %s, %d thread(s): %.1f GFLOP/s\n", sgemm_n, g_device.str().c_str(),
              args.threads, sgemm_gf);
  benchmark::Shutdown();
  for (const std::string& r : args.required) {
    for (const Shape& s : all) {
      const auto it = g_figures.find(s.name + "/" + r + dev + tt);
      if (it == g_figures.end() || it->second.status.rfind("failed", 0) == 0) {
        std::fprintf(stderr, "attention_bench: required method %s did not run on %s: %s\n",
                     r.c_str(), s.name.c_str(),
                     it == g_figures.end() ? "not registered" : it->second.status.c_str());
        return 4;
      }
    }
  }
  if (exact_missing) {
    std::fprintf(stderr, "attention_bench: exact attention did not run on some shape\n");
    return 1;
  }
  return 0;
}
