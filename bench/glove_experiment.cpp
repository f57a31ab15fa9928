// The paper's attention-approximation experiment on real GloVe vectors (KDEformer §5.1;
// kdeformer.md §3.1): Q = K = consecutive GloVe rows / 10^{1/4}, V = rows from 32768, float64,
// error ‖Ã − A‖_op / ‖A‖_op, for KDEformer (reference and Gray bucket order), the block-diagonal
// part alone, uniform sampling of m keys, and exact attention, all in one run.
// Writes <out>/glove.csv, <out>/summary.csv and <out>/glove.png; prints a table per n.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "attention/exact.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"
#include "attention/threads.h"
#include "tests/support/shared_data.h"

namespace {

namespace att = kdeserve::attention;

constexpr int64_t kGloveRows = 49152;
constexpr int64_t kGloveDim = 100;
constexpr int64_t kValueOffset = 32768;

struct Config {
  std::string out = "out/glove";
  std::string data;
  std::vector<int64_t> sizes = {1024, 2048, 4096, 8192, 16384};
  std::vector<int64_t> samples = {64, 128, 256, 512, 1024, 2048};
  int64_t pairs = 3;
  int64_t fixed_bucket = 64;
  int64_t threads = 0;
  bool plot = true;
};

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) values.push_back(std::stoll(item));
  return values;
}

void usage() {
  std::cout << "usage: glove_experiment [--out DIR] [--data FILE.f32] [--sizes 1024,2048,...]\n"
               "                        [--samples 64,128,...] [--pairs P] [--fixed-bucket B]\n"
               "                        [--threads T] [--no-plot]\n"
               "Defaults: out/glove, ../shared/data/glove/glove.6B.100d.wink-first49152.f32,\n"
               "sizes 1024..16384, samples 64..2048, 3 (Q, V) pairs, fixed bucket 64, all cores.\n";
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
    else if (a == "--sizes") c.sizes = parse_list(next());
    else if (a == "--samples") c.samples = parse_list(next());
    else if (a == "--pairs") c.pairs = std::stoll(next());
    else if (a == "--fixed-bucket") c.fixed_bucket = std::stoll(next());
    else if (a == "--threads") c.threads = std::stoll(next());
    else if (a == "--no-plot") c.plot = false;
    else if (a == "--help" || a == "-h") { usage(); std::exit(0); }
    else { std::cerr << "unknown argument " << a << "\n"; usage(); std::exit(2); }
  }
  if (c.data.empty()) {
    c.data = kdeserve::testing::shared_dir() + "/data/glove/glove.6B.100d.wink-first49152.f32";
  }
  return c;
}

at::Tensor load_glove(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "cannot open GloVe vectors " << path << " (set --data or KDESERVE_SHARED_DIR)\n";
    std::exit(1);
  }
  at::Tensor rows = at::empty({kGloveRows, kGloveDim}, at::kFloat);
  in.read(reinterpret_cast<char*>(rows.data_ptr<float>()), rows.numel() * sizeof(float));
  if (in.gcount() != static_cast<std::streamsize>(rows.numel() * sizeof(float))) {
    std::cerr << path << ": expected " << rows.numel() * 4 << " bytes of float32\n";
    std::exit(1);
  }
  return rows;
}

struct Run {
  std::string method;      // kdeformer, block_only, uniform, exact
  std::string order;       // gray, reference, -
  std::string convention;  // b=m/2, b=64, -
  int64_t bucket = 0, samples = 0;
};

struct Result {
  double seconds = 0, error = 0;
};

template <typename F>
double seconds_of(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<Run> runs_for(const Config& c) {
  std::vector<Run> runs;
  const std::string fixed = "b=" + std::to_string(c.fixed_bucket);
  runs.push_back({"block_only", "gray", fixed, c.fixed_bucket, 0});
  for (int64_t m : c.samples) {
    for (const auto& [conv, b] : {std::pair<std::string, int64_t>{"b=m/2", m / 2},
                                  {fixed, c.fixed_bucket}}) {
      runs.push_back({"kdeformer", "reference", conv, b, m});
      runs.push_back({"kdeformer", "gray", conv, b, m});
    }
    runs.push_back({"block_only", "gray", "b=m/2", m / 2, 0});
    runs.push_back({"uniform", "-", "-", 0, m});
  }
  return runs;
}

void progress(int64_t done, int64_t total, const std::string& what) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
  std::fprintf(stderr, "\r[%-*s] %3d%% %-48s", width,
               std::string(filled, '#').c_str(), static_cast<int>(100 * done / total),
               what.c_str());
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  // LibTorch starts with one intra-op thread here: use every core unless told otherwise.
  att::set_num_threads(c.threads > 0 ? static_cast<int>(c.threads) : att::hardware_threads());
  std::filesystem::create_directories(c.out);
  const at::Tensor glove = load_glove(c.data);
  const std::vector<Run> runs = runs_for(c);
  const int64_t total = static_cast<int64_t>(c.sizes.size()) * c.pairs * (runs.size() + 1);
  std::cout << "GloVe attention approximation: " << c.data << "\nthreads " << at::get_num_threads()
            << ", pairs " << c.pairs << ", float64, error = ||A~ - A||_op / ||A||_op\n";

  std::ofstream csv(c.out + "/glove.csv");
  csv << "n,pair,method,order,convention,bucket,samples,seconds,rel_error\n";
  // (n, method, order, convention, bucket, samples) → (seconds, error, pairs) summed over pairs.
  using Key = std::tuple<int64_t, std::string, std::string, std::string, int64_t, int64_t>;
  std::map<Key, std::tuple<double, double, int64_t>> summary;
  int64_t done = 0;
  for (int64_t n : c.sizes) {
    if (n > kValueOffset || n > kGloveRows - kValueOffset) {
      std::cerr << "n=" << n << " exceeds the 16384 value rows; skipped\n";
      continue;
    }
    for (int64_t p = 0; p < c.pairs; ++p) {
      // Pairs spread over the rows: queries from [0, 32768), values from [32768, 49152).
      const int64_t span = std::max<int64_t>(c.pairs - 1, 1);
      const int64_t q_off = p * (kValueOffset - n) / span;
      const int64_t v_off = kValueOffset + p * (kGloveRows - kValueOffset - n) / span;
      const at::Tensor q = glove.narrow(0, q_off, n).to(at::kDouble).div_(std::pow(10.0, 0.25))
                               .view({1, 1, n, kGloveDim});
      const at::Tensor v = glove.narrow(0, v_off, n).to(at::kDouble).view({1, 1, n, kGloveDim});
      at::Tensor exact;
      progress(done, total, "n=" + std::to_string(n) + " pair " + std::to_string(p) + " exact");
      const double exact_s = seconds_of([&] { exact = att::exact_attention(q, q, v, 1.0)[0][0]; });
      ++done;
      const double exact_norm = att::spectral_norm(exact).item<double>();
      csv << n << ',' << p << ",exact,-,-,0,0," << exact_s << ",0\n";
      auto& ex = summary[{n, "exact", "-", "-", 0, 0}];
      std::get<0>(ex) += exact_s;
      std::get<2>(ex) += 1;
      for (const Run& r : runs) {
        if (r.bucket >= n) {  // one block holds every key: that is exact attention, not a sample
          ++done;
          continue;
        }
        progress(done, total, "n=" + std::to_string(n) + " pair " + std::to_string(p) + " " +
                                  r.method + " " + r.order + " m=" + std::to_string(r.samples) +
                                  " " + r.convention);
        auto opt = att::KdeformerOptions()
                       .bucket_size(std::max<int64_t>(r.bucket, 1))
                       .sample_size(r.samples)
                       .bucket_order(r.order == "reference" ? att::BucketOrder::kReference
                                                            : att::BucketOrder::kGray);
        if (r.method == "uniform") opt.heavy(false).sampling(att::Sampling::kUniform);
        att::AttentionCall call;
        call.seed = static_cast<uint64_t>(1000 * p + 17);
        at::Tensor est;
        const double s = seconds_of(
            [&] { est = att::kdeformer::kdeformer_attention(q, q, v, 1.0, opt, call)[0][0]; });
        const double err = att::spectral_norm(est - exact).item<double>() / exact_norm;
        ++done;
        csv << n << ',' << p << ',' << r.method << ',' << r.order << ',' << r.convention << ','
            << r.bucket << ',' << r.samples << ',' << s << ',' << err << '\n';
        auto& acc = summary[{n, r.method, r.order, r.convention, r.bucket, r.samples}];
        std::get<0>(acc) += s;
        std::get<1>(acc) += err;
        std::get<2>(acc) += 1;
      }
    }
  }
  progress(total, total, "done");
  std::fprintf(stderr, "\n");
  csv.close();

  std::ofstream sum(c.out + "/summary.csv");
  sum << "n,method,order,convention,bucket,samples,mean_seconds,mean_rel_error,pairs\n";
  for (const auto& [key, acc] : summary) {
    const auto& [n, method, order, conv, bucket, m] = key;
    const auto& [secs, err, count] = acc;
    sum << n << ',' << method << ',' << order << ',' << conv << ',' << bucket << ',' << m << ','
        << secs / count << ',' << err / count << ',' << count << '\n';
  }
  sum.close();

  // One table per n: rows = method and bucket convention, columns = m.
  const std::string fixed = "b=" + std::to_string(c.fixed_bucket);
  for (int64_t n : c.sizes) {
    auto ex = summary.find({n, "exact", "-", "-", 0, 0});
    if (ex == summary.end()) continue;
    std::printf("\nn = %lld  (mean over %lld pairs; exact attention %.1f ms)\n",
                static_cast<long long>(n), static_cast<long long>(std::get<2>(ex->second)),
                1e3 * std::get<0>(ex->second) / std::get<2>(ex->second));
    std::printf("%-30s", "error [ms]            m =");
    for (int64_t m : c.samples) std::printf("%17lld", static_cast<long long>(m));
    std::printf("\n");
    const std::vector<std::tuple<std::string, std::string, std::string>> rows = {
        {"kdeformer", "reference", "b=m/2"}, {"kdeformer", "gray", "b=m/2"},
        {"block_only", "gray", "b=m/2"},     {"kdeformer", "reference", fixed},
        {"kdeformer", "gray", fixed},        {"block_only", "gray", fixed},
        {"uniform", "-", "-"}};
    for (const auto& [method, order, conv] : rows) {
      std::printf("%-30s", (method + (order == "-" ? "" : " " + order) +
                            (conv == "-" ? "" : " " + conv)).c_str());
      for (int64_t m : c.samples) {
        const int64_t bucket = conv == "b=m/2" ? m / 2 : (conv == "-" ? 0 : c.fixed_bucket);
        auto it = summary.find({n, method, order, conv, bucket, method == "block_only" ? 0 : m});
        if (it == summary.end()) {
          std::printf("%17s", "-");
          continue;
        }
        const auto& [secs, err, count] = it->second;
        std::printf("   %6.3f [%6.1f]", err / count, 1e3 * secs / count);
      }
      std::printf("\n");
    }
  }
  std::cout << "\nwrote " << c.out << "/glove.csv and " << c.out << "/summary.csv\n";
  std::fflush(stdout);
  if (c.plot) {
    const std::string script = std::string(KDESERVE_SOURCE_DIR) + "/bench/plot_glove.py";
    const std::string cmd = "/usr/bin/python3 '" + script + "' '" + c.out + "/summary.csv' '" +
                            c.out + "/glove.png'";
    if (std::system(cmd.c_str()) != 0) {
      std::cerr << "plotting failed (needs /usr/bin/python3 with python3-matplotlib): " << cmd
                << "\n";
      return 1;
    }
  }
  return 0;
}
