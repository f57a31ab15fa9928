// The paper's attention-approximation experiment (KDEformer §5.1; kdeformer.md §3.1), extended
// to every method at equal per-query budgets m (peers.md §8; the mapping is bench/budget.cpp):
// Q = K = consecutive GloVe rows / 10^{1/4}, V = rows from 32768, float64, or synthetic clustered
// Q = K with diffuse, peaked or very peaked attention (--regime), or any float32 row file
// (--data). Two errors per call: the paper's ‖Â − A‖₂ / ‖A‖₂ and the centered error (the column
// mean of Â − A removed, over ‖A − 1·mean(A)‖₂), next to the trivial floor "every row =
// mean(V)". Every method is timed in the same run, repetitions interleaved over the methods.
// Writes <out>/calls.csv, <out>/summary.csv, <out>/rel_error.png, <out>/centered_error.png and
// prints three tables per n. A method that throws (e.g. a placeholder) is reported as
// "failed: <message>" and the run goes on.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/exact.h"
#include "attention/threads.h"
#include "bench/budget.h"
#include "bench/glove/data.h"
#include "tests/support/shared_data.h"

namespace {

namespace att = kdeserve::attention;
namespace kb = kdeserve::bench;

// The dispatch's exact attention must match the reference exact attention to rounding.
constexpr double kExactSelfCheck = 1e-9;

struct Config {
  std::string out;
  std::string data;
  int64_t dim = 100;
  kb::Regime regime = kb::Regime::kFile;
  std::string label;  // the regime's name in the CSVs and the default out dir ("file" for --data)
  std::vector<int64_t> sizes = {1024, 2048, 4096, 8192, 16384};
  std::vector<int64_t> samples = {32, 64, 128, 256, 512, 1024, 2048};
  std::vector<std::string> methods = kb::default_variants();
  std::vector<std::string> required;  // must run without failing (exit 4 otherwise)
  int64_t pairs = 3;
  int64_t reps = 3;
  int64_t threads = 0;
  kb::BudgetChoices choices;
  bool plot = true;
  double max_call_seconds = 0;  // > 0: skip a method's larger m once one of its calls took longer
};

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) values.push_back(std::stoll(item));
  return values;
}

void usage() {
  std::cout
      << "usage: glove_experiment [--out DIR] [--regime glove|diffuse|peaked|very_peaked]\n"
         "         [--data FILE.f32] [--dim D] [--sizes 1024,2048,...] [--samples 32,64,...]\n"
         "         [--methods default|all|a,b,...] [--pairs P] [--reps R] [--threads T]\n"
         "         [--reformer-hashes H] [--wildcat-bins C] [--require a,b,...] [--no-plot]\n"
         "         [--max-call-seconds S]\n"
         "Defaults: out/<regime>, GloVe ../shared/data/glove/glove.6B.100d.wink-first49152.f32\n"
         "(--data: any float32 file of rows of D = 100 values; queries from its first 2/3),\n"
         "sizes 1024..16384, m = 32..2048 per-query keys/features, 3 (Q, V) pairs, 3 interleaved\n"
         "repetitions per pair (fresh seeds), Reformer 1 hash, WildCat C = 1, all cores.\n"
         "A method that throws is reported as failed and the run goes on; --require names\n"
         "methods whose failure (or fallback to exact) is an error (exit 4).\n"
         "--max-call-seconds S: once a call of a method takes longer than S, its larger m at\n"
         "that n are skipped (status \"skipped: ...\"; the cells already measured are kept).\n"
         "Methods (--methods):\n"
      << kb::describe_variants();
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "missing value after " << a << "\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") c.out = next();
    else if (a == "--data") c.data = next();
    else if (a == "--dim") c.dim = std::stoll(next());
    else if (a == "--regime") c.regime = kb::regime_from_string(next());
    else if (a == "--sizes") c.sizes = parse_list(next());
    else if (a == "--samples") c.samples = parse_list(next());
    else if (a == "--methods") c.methods = kb::parse_variants(next());
    else if (a == "--require") c.required = kb::parse_variants(next());
    else if (a == "--pairs") c.pairs = std::stoll(next());
    else if (a == "--reps") c.reps = std::max<int64_t>(std::stoll(next()), 1);
    else if (a == "--threads") c.threads = std::stoll(next());
    else if (a == "--reformer-hashes") c.choices.reformer_hashes = std::stoll(next());
    else if (a == "--wildcat-bins") c.choices.wildcat_bins = std::stoll(next());
    else if (a == "--max-call-seconds") c.max_call_seconds = std::stod(next());
    else if (a == "--no-plot") c.plot = false;
    else if (a == "--help" || a == "-h") { usage(); std::exit(0); }
    else { std::cerr << "unknown argument " << a << "\n"; usage(); std::exit(2); }
  }
  if (!c.data.empty() && c.regime != kb::Regime::kFile) {
    std::cerr << "--data reads a row file: it goes with --regime glove\n";
    std::exit(2);
  }
  c.label = c.data.empty() ? kb::to_string(c.regime) : "file";
  if (c.data.empty() && c.regime == kb::Regime::kFile) {
    c.data = kdeserve::testing::shared_dir() + "/data/glove/glove.6B.100d.wink-first49152.f32";
  }
  if (c.out.empty()) c.out = "out/" + c.label;
  return c;
}

template <typename F>
double seconds_of(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void progress(int64_t done, int64_t total, const std::string& what) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
  std::fprintf(stderr, "\r[%-*s] %3d%% %-56s", width, std::string(filled, '#').c_str(),
               static_cast<int>(100 * done / std::max<int64_t>(total, 1)),
               what.substr(0, 56).c_str());
  std::fflush(stderr);
}

std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  return line.size() > 160 ? line.substr(0, 160) : line;
}

std::string csv_text(std::string s) {
  std::replace(s.begin(), s.end(), ',', ';');
  std::replace(s.begin(), s.end(), '"', '\'');
  return s;
}

// One configured call at one n, run reps × pairs times.
struct Case {
  kb::Budgeted b;
  std::vector<int64_t> requested;  // the m values of --samples that map to these options
  std::string status = "ok";       // ok, failed: ..., fallback: ...
  std::vector<double> seconds;
  double rel_sum = 0, centered_sum = 0;
  int64_t errors = 0;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

std::vector<Case> cases_for(const Config& c, int64_t n) {
  std::vector<Case> cases;
  for (const std::string& variant : c.methods) {
    for (int64_t m : c.samples) {
      kb::Budgeted b = kb::at_budget(variant, m, n, n, c.choices);
      auto same = std::find_if(cases.begin(), cases.end(), [&](const Case& k) {
        return k.b.variant == variant && k.b.knobs == b.knobs;
      });
      if (same != cases.end()) {
        same->requested.push_back(m);
        continue;
      }
      Case k;
      k.b = std::move(b);
      k.requested = {m};
      cases.push_back(std::move(k));
      if (variant.rfind("exact", 0) == 0) break;
    }
  }
  return cases;
}

struct SizeResult {
  int64_t n = 0;
  std::vector<Case> cases;
  double floor_rel = 0, floor_centered = 0;
  int64_t pairs = 0;
};

void print_tables(const Config& c, const SizeResult& r) {
  double exact_ms = 0;
  for (const Case& k : r.cases) {
    if (k.b.variant == "exact" && !k.seconds.empty()) exact_ms = 1e3 * median(k.seconds);
  }
  std::printf("\nn = %lld  (%s, %lld pairs x %lld reps; exact attention %.1f ms; trivial floor: "
              "rel %.3f, centered %.3f)\n",
              static_cast<long long>(r.n), c.label.c_str(),
              static_cast<long long>(r.pairs), static_cast<long long>(c.reps), exact_ms,
              r.floor_rel / std::max<int64_t>(r.pairs, 1),
              r.floor_centered / std::max<int64_t>(r.pairs, 1));
  const char* titles[] = {"relative spectral error", "centered error", "ms per call (median)"};
  for (int metric = 0; metric < 3; ++metric) {
    std::printf("%-22s m =", titles[metric]);
    for (int64_t m : c.samples) std::printf("%10lld", static_cast<long long>(m));
    std::printf("\n");
    for (const std::string& variant : c.methods) {
      if (variant.rfind("exact", 0) == 0) continue;
      std::printf("%-26s", variant.c_str());
      std::string failure;
      for (int64_t m : c.samples) {
        const Case* k = nullptr;
        for (const Case& x : r.cases) {
          if (x.b.variant == variant &&
              std::find(x.requested.begin(), x.requested.end(), m) != x.requested.end()) {
            k = &x;
          }
        }
        if (k == nullptr || k->errors == 0) {
          if (k != nullptr && k->status != "ok" && failure.empty()) failure = k->status;
          std::printf("%10s", k != nullptr && k->status.rfind("fallback", 0) == 0 ? "exact" : "-");
          continue;
        }
        const double value = metric == 0   ? k->rel_sum / k->errors
                             : metric == 1 ? k->centered_sum / k->errors
                                           : 1e3 * median(k->seconds);
        const std::string mark = k->b.m != m ? "*" : " ";
        std::printf(metric == 2 ? "%9.1f%s" : "%9.3f%s", value, mark.c_str());
      }
      if (metric == 0 && !failure.empty() && failure.rfind("fallback", 0) != 0 &&
          failure.rfind("skipped", 0) != 0) {
        std::printf("  %s", failure.c_str());
      }
      std::printf("\n");
    }
  }
  std::printf("(* the method's real m differs from the column's, see summary.csv; exact: the "
              "budget covers every key, the call ran exact attention)\n");
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  // LibTorch starts with one intra-op thread here: use every core unless told otherwise.
  att::set_num_threads(c.threads > 0 ? static_cast<int>(c.threads) : att::hardware_threads());
  std::filesystem::create_directories(c.out);
  kb::RowFile file;
  if (c.regime == kb::Regime::kFile) file = kb::load_rows(c.data, c.dim);
  std::cout << "Attention approximation, regime " << c.label
            << (c.regime == kb::Regime::kFile ? " (" + c.data + ")" : std::string(" (synthetic)"))
            << "\nthreads " << at::get_num_threads() << ", pairs " << c.pairs << ", reps "
            << c.reps << ", float64; rel = ||A~ - A||_op / ||A||_op, centered = "
               "||(A~ - A) - 1 mean(A~ - A)||_op / ||A - 1 mean(A)||_op\n";

  std::vector<int64_t> sizes;
  for (int64_t n : c.sizes) {
    if (c.regime == kb::Regime::kFile && n > file.max_n()) {
      std::cerr << "n=" << n << " exceeds the file's " << file.max_n() << " value rows; skipped\n";
      continue;
    }
    sizes.push_back(n);
  }
  if (sizes.empty()) {
    std::cerr << "no size of --sizes fits the data\n";
    return 2;
  }
  int64_t total = 0;
  for (int64_t n : sizes) total += c.pairs * c.reps * static_cast<int64_t>(cases_for(c, n).size());

  std::ofstream calls(c.out + "/calls.csv");
  calls << "regime,n,pair,rep,variant,method,m,knobs,status,ran,backend,seconds,rel_error,"
           "centered_error\n";
  std::vector<SizeResult> results;
  int64_t done = 0;
  bool self_check_failed = false;
  for (int64_t n : sizes) {
    SizeResult res;
    res.n = n;
    res.cases = cases_for(c, n);
    for (int64_t p = 0; p < c.pairs; ++p) {
      const kb::Pair pair = kb::make_pair(c.regime, &file, n, p, c.pairs);
      const at::Tensor q = pair.q.view({1, 1, n, pair.q.size(1)});
      const at::Tensor v = pair.v.view({1, 1, n, pair.v.size(1)});
      progress(done, total, "n=" + std::to_string(n) + " pair " + std::to_string(p) + " reference");
      const kb::Reference ref = kb::make_reference(att::exact_attention(q, q, v, 1.0)[0][0]);
      const kb::Errors floor = kb::errors_of(pair.v.mean(0, true).expand_as(ref.exact), ref);
      res.floor_rel += floor.rel;
      res.floor_centered += floor.centered;
      ++res.pairs;
      calls << c.label << ',' << n << ',' << p << ",0,trivial,-,0,every row = "
            << "mean(V),ok,-,-,0," << floor.rel << ',' << floor.centered << '\n';
      const auto count = static_cast<int64_t>(res.cases.size());
      for (int64_t rep = 0; rep < c.reps; ++rep) {
        // Interleaved: every case once per repetition, starting at a different case each time.
        for (int64_t j = 0; j < count; ++j) {
          Case& k = res.cases[static_cast<size_t>((j + rep * 3) % count)];
          ++done;
          if (k.status != "ok") continue;  // failed, fell back or skipped: not run again
          progress(done, total, "n=" + std::to_string(n) + " p" + std::to_string(p) + " r" +
                                    std::to_string(rep) + " " + k.b.variant + " m=" +
                                    std::to_string(k.b.m));
          att::AttentionReport report;
          att::AttentionCall call;
          call.seed = static_cast<uint64_t>(1000 * p + 100000 * rep + 17);
          call.report = &report;
          att::AttentionOptions opt = k.b.options;
          opt.scale(1.0);  // logits q·k: the inputs are pre-scaled
          at::Tensor est;
          double s = 0;
          try {
            s = seconds_of([&] { est = att::attention(q, q, v, opt, call)[0][0]; });
          } catch (const std::exception& e) {
            k.status = "failed: " + first_line(e.what());
          }
          if (k.status == "ok" && report.ran != report.requested) {
            k.status = "fallback: " + first_line(report.reason);
          }
          kb::Errors err;
          if (k.status == "ok") {
            err = kb::errors_of(est, ref);
            k.seconds.push_back(s);
            if (c.max_call_seconds > 0 && s > c.max_call_seconds) {
              for (Case& x : res.cases) {
                if (x.b.variant == k.b.variant && x.b.m > k.b.m && x.status == "ok") {
                  x.status = "skipped: a call at m = " + std::to_string(k.b.m) + " took " +
                             std::to_string(s) + " s (--max-call-seconds)";
                }
              }
            }
            k.rel_sum += err.rel;
            k.centered_sum += err.centered;
            ++k.errors;
            if (k.b.variant.rfind("exact", 0) == 0 && !(err.rel < kExactSelfCheck)) {
              self_check_failed = true;
              std::cerr << "\nself-check: " << k.b.variant << " differs from exact attention by "
                        << err.rel << " at n=" << n << "\n";
            }
          }
          calls << c.label << ',' << n << ',' << p << ',' << rep << ','
                << k.b.variant << ',' << att::to_string(k.b.options.method()) << ',' << k.b.m
                << ',' << k.b.knobs << ',' << csv_text(k.status) << ','
                << att::to_string(report.ran) << ',' << report.backend << ',' << s << ','
                << err.rel << ',' << err.centered << '\n';
        }
      }
    }
    results.push_back(std::move(res));
  }
  progress(total, total, "done");
  std::fprintf(stderr, "\n");
  calls.close();

  std::ofstream sum(c.out + "/summary.csv");
  sum << "regime,n,variant,method,m,m_requested,knobs,status,calls,median_seconds,"
         "mean_rel_error,mean_centered_error,floor_rel_error,floor_centered_error,"
         "exact_median_seconds\n";
  for (const SizeResult& r : results) {
    double exact_s = 0;
    for (const Case& k : r.cases) {
      if (k.b.variant == "exact" && !k.seconds.empty()) exact_s = median(k.seconds);
    }
    const double fr = r.floor_rel / r.pairs, fc = r.floor_centered / r.pairs;
    sum << c.label << ',' << r.n << ",trivial,-,0,0,every row = mean(V),ok,"
        << r.pairs << ",0," << fr << ',' << fc << ',' << fr << ',' << fc << ',' << exact_s << '\n';
    for (const Case& k : r.cases) {
      std::string req;
      for (int64_t m : k.requested) req += (req.empty() ? "" : ";") + std::to_string(m);
      sum << c.label << ',' << r.n << ',' << k.b.variant << ','
          << att::to_string(k.b.options.method()) << ',' << k.b.m << ',' << req << ','
          << k.b.knobs << ',' << csv_text(k.status) << ',' << k.errors << ',';
      if (k.errors > 0) {
        sum << median(k.seconds) << ',' << k.rel_sum / k.errors << ','
            << k.centered_sum / k.errors;
      } else {
        sum << ",,";
      }
      sum << ',' << fr << ',' << fc << ',' << exact_s << '\n';
    }
  }
  sum.close();

  for (const SizeResult& r : results) print_tables(c, r);
  std::cout << "\nwrote " << c.out << "/calls.csv and " << c.out << "/summary.csv\n";
  std::fflush(stdout);
  if (self_check_failed) return 3;
  for (const std::string& r : c.required) {
    for (const SizeResult& res : results) {
      for (const Case& k : res.cases) {
        if (k.b.variant == r && k.status != "ok" && k.status.rfind("fallback", 0) != 0 &&
            k.status.rfind("skipped", 0) != 0) {
          std::cerr << "required method " << r << " did not run at n=" << res.n << ": " << k.status
                    << "\n";
          return 4;
        }
      }
    }
    if (std::find(c.methods.begin(), c.methods.end(), r) == c.methods.end()) {
      std::cerr << "required method " << r << " is not among --methods\n";
      return 4;
    }
  }
  if (c.plot) {
    const std::string script = std::string(KDESERVE_SOURCE_DIR) + "/bench/plot_glove.py";
    const std::string cmd = "/usr/bin/python3 '" + script + "' '" + c.out + "/summary.csv' '" +
                            c.out + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::cerr << "plotting failed (needs /usr/bin/python3 with python3-matplotlib): " << cmd
                << "\n";
      return 1;
    }
  }
  return 0;
}
