// Per-image CPU latency of the hosted models, exact vs KDEformer attention, measured in one run:
// T2T-ViT_t-24 at batch 1 and 8 with the attention time of each layer group, and BigGAN-deep-128
// and -512 at batch 1 with the self-attention layer's share; peak extra tensor memory per call.
// Weights are seeded random (timing depends on shapes, not on the weight values).
// `--serve` instead answers timing requests read from stdin, one call each, so that a harness
// (bench/model_reference_bench.py --ours) interleaves our calls with PyTorch's call by call.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attention/threads.h"
#include "models/registry.h"
#include "tests/support/peak_memory.h"

namespace {

namespace km = kdeserve::models;
namespace att = kdeserve::attention;

struct Config {
  std::string model;
  int64_t batch;
  int reps;
};

struct Figures {
  double total_s = 0;                      // per call
  std::map<std::string, double> group_s;   // attention seconds per layer group, per call
  double peak_mib = 0;
};

// Layer-group name of the i-th attention report of a forward pass.
std::string group_of(const km::ModelSpec& spec, size_t i) {
  if (spec.kind == km::ModelKind::kGenerator) return "self_attention";
  if (i == 0) return "t2t_layer1";
  if (i == 1) return "t2t_layer2";
  return "blocks";
}

// A model's seeded inputs at one batch size (images, or z and one-hot classes).
struct Inputs {
  at::Tensor images, z, classes;
};

Inputs make_inputs(const km::ModelSpec& spec, int64_t batch) {
  at::Generator gen = at::detail::createCPUGenerator(7);
  Inputs in;
  if (spec.kind == km::ModelKind::kClassifier) {
    in.images = at::randn({batch, 3, spec.image_size, spec.image_size}, gen, at::kFloat);
  } else {
    in.z = at::randn({batch, spec.z_dim}, gen, at::kFloat).clamp_(-2, 2).mul_(0.4);
    in.classes = at::zeros({batch, spec.num_classes});
    for (int64_t b = 0; b < batch; ++b) in.classes[b][(207 + 100 * b) % spec.num_classes] = 1;
  }
  return in;
}

at::Tensor run_once(const km::Model& model, const Inputs& in, const km::AttentionPlan& plan,
                    km::ForwardContext& ctx) {
  if (model.spec().kind == km::ModelKind::kClassifier) return model.classify(in.images, plan, ctx);
  return model.generate(in.z, in.classes, 0.4, plan, ctx);
}

Figures measure(const km::Model& model, const km::AttentionPlan& plan, int64_t batch, int reps) {
  const km::ModelSpec& spec = model.spec();
  const Inputs in = make_inputs(spec, batch);
  auto run = [&](km::ForwardContext& ctx) { return run_once(model, in, plan, ctx); };
  Figures f;
  {
    km::ForwardContext warm;
    kdeserve::testing::PeakMemoryScope scope;
    run(warm);
    f.peak_mib = static_cast<double>(scope.peak_bytes()) / (1 << 20);
  }
  for (int r = 0; r < reps; ++r) {
    std::vector<att::AttentionReport> reports;
    km::ForwardContext ctx;
    ctx.seed = static_cast<uint64_t>(r + 1);
    ctx.reports = &reports;
    const auto t0 = std::chrono::steady_clock::now();
    run(ctx);
    f.total_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t i = 0; i < reports.size(); ++i) f.group_s[group_of(spec, i)] += reports[i].seconds;
  }
  f.total_s /= reps;
  for (auto& [_, s] : f.group_s) s /= reps;
  return f;
}

// The serving loop of --serve. Each request line is "<model> <batch> <exact|kdeformer>"; the
// answer is "ms <milliseconds of that one call>" (the first call of a model, batch and mode runs
// once untimed before it), or "error <why>". Models and inputs are kept between requests.
int serve() {
  std::map<std::string, std::unique_ptr<km::Model>> models;
  std::map<std::pair<std::string, int64_t>, Inputs> inputs;
  std::map<std::string, bool> warm;  // "<model> <batch> <mode>" already run once
  std::printf("ready\n");
  std::fflush(stdout);
  std::string line;
  uint64_t seed = 0;
  while (std::getline(std::cin, line)) {
    std::istringstream request(line);
    std::string name, mode;
    int64_t batch = 0;
    if (!(request >> name >> batch >> mode) || batch < 1 ||
        (mode != "exact" && mode != "kdeformer")) {
      std::printf("error want: <model> <batch> <exact|kdeformer>\n");
      std::fflush(stdout);
      continue;
    }
    try {
      auto& model = models[name];
      if (!model) model = km::create_model(name);
      auto key = std::make_pair(name, batch);
      if (inputs.count(key) == 0) inputs[key] = make_inputs(model->spec(), batch);
      const km::AttentionPlan plan =
          model->plan_for(mode == "exact" ? att::Method::kExact : att::Method::kKdeformer);
      const std::string warm_key = name + " " + std::to_string(batch) + " " + mode;
      if (!warm[warm_key]) {
        km::ForwardContext ctx;
        run_once(*model, inputs[key], plan, ctx);
        warm[warm_key] = true;
      }
      km::ForwardContext ctx;
      ctx.seed = ++seed;
      const auto t0 = std::chrono::steady_clock::now();
      run_once(*model, inputs[key], plan, ctx);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("ms %.3f\n", ms);
    } catch (const std::exception& e) {
      std::string what = e.what();
      what = what.substr(0, what.find('\n'));
      std::printf("error %s\n", what.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = att::hardware_threads();
  bool serve_mode = false;
  std::vector<Config> configs = {{"t2t_vit_t_24", 1, 5}, {"t2t_vit_t_24", 8, 3},
                                 {"biggan-deep-128", 1, 3}, {"biggan-deep-512", 1, 2}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else if (a == "--serve") {
      serve_mode = true;
    } else if (a == "--quick") {
      configs = {{"t2t_vit_t_24", 1, 2}, {"biggan-deep-128", 1, 1}};
    } else if (a == "--models" && i + 1 < argc) {
      const std::string wanted = "," + std::string(argv[++i]) + ",";
      std::vector<Config> kept;
      for (const Config& c : configs) {
        if (wanted.find("," + c.model + ",") != std::string::npos) kept.push_back(c);
      }
      configs = kept;
    } else {
      std::fprintf(stderr,
                   "usage: model_bench [--threads N] [--quick] [--models a,b] [--serve]\n");
      return 2;
    }
  }
  att::set_num_threads(threads);
  if (serve_mode) return serve();
  kdeserve::testing::PeakMemory::install();
  std::printf("model_bench: %d thread(s); seeded random weights; times per call\n", threads);
  std::printf("%-16s %5s %-9s %10s %10s %11s %11s %11s %11s %9s\n", "model", "batch", "attention",
              "total ms", "ms/image", "t2t_l1 ms", "t2t_l2 ms", "blocks ms", "selfatt ms",
              "peak MiB");
  for (const Config& c : configs) {
    const auto model = km::create_model(c.model);
    std::map<std::string, Figures> by_mode;
    for (const auto& [mode, plan] :
         {std::pair<std::string, km::AttentionPlan>{"exact", model->plan_for(att::Method::kExact)},
          {"kdeformer", model->plan_for(att::Method::kKdeformer)}}) {
      const Figures f = measure(*model, plan, c.batch, c.reps);
      by_mode[mode] = f;
      auto g = [&](const char* k) {
        auto it = f.group_s.find(k);
        return it == f.group_s.end() ? 0.0 : it->second * 1e3;
      };
      std::printf("%-16s %5lld %-9s %10.1f %10.1f %11.1f %11.1f %11.1f %11.1f %9.1f\n",
                  c.model.c_str(), static_cast<long long>(c.batch), mode.c_str(),
                  f.total_s * 1e3, f.total_s * 1e3 / c.batch, g("t2t_layer1"), g("t2t_layer2"),
                  g("blocks"), g("self_attention"), f.peak_mib);
      std::fflush(stdout);
    }
    const Figures& e = by_mode["exact"];
    const Figures& k = by_mode["kdeformer"];
    std::printf("  speedup (exact / kdeformer): end-to-end %.2fx", e.total_s / k.total_s);
    for (const auto& [group, es] : e.group_s) {
      auto it = k.group_s.find(group);
      if (it != k.group_s.end() && it->second > 0 && group != "blocks") {
        std::printf(", %s %.2fx", group.c_str(), es / it->second);
      }
    }
    double e_att = 0, k_att = 0;
    for (const auto& [_, s] : e.group_s) e_att += s;
    for (const auto& [_, s] : k.group_s) k_att += s;
    std::printf("; attention share of the call: exact %.0f%%, kdeformer %.0f%%\n",
                100 * e_att / e.total_s, 100 * k_att / k.total_s);
  }
  return 0;
}
