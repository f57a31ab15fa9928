// The KDEformer budget chooser on the hosted models' real attention inputs: T2T-ViT_t-24 fed with
// the ImageNet photos of shared/data (its t2t_layer1 and t2t_layer2), and BigGAN-deep's
// self-attention fed with truncated noise. Each layer's q, k, v are recorded from an exact
// forward pass; every candidate of attention::kdeformer::candidate_grid, the paper's setting and
// the model's default run on them (interleaved, float32, as the models run), and the
// chooser picks the cheapest setting under each target error. Weights: converted checkpoints
// with --weights-dir, else seeded random ones (the shapes are real, the data is real images).
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "attention/kdeformer/budget.h"
#include "attention/threads.h"
#include "models/biggan/biggan.h"
#include "models/preprocess/image.h"
#include "models/registry.h"
#include "models/t2t_vit/t2t_vit.h"
#include "tests/support/shared_data.h"

namespace {

namespace km = kdeserve::models;
namespace att = kdeserve::attention;
namespace kde = kdeserve::attention::kdeformer;

struct Args {
  int threads = 1;
  int64_t images = 4;
  int64_t reps = 3;
  std::vector<double> targets = {0.02, 0.05, 0.1};
  std::string biggan = "biggan-deep-128";
  std::string weights_dir;
  bool quick = false;
};

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    out.push_back(std::stod(s.substr(start, end - start)));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

km::LoadOptions load_options(const Args& a, const std::string& model) {
  km::LoadOptions o;
  const std::string path = a.weights_dir + "/" + model + ".safetensors";
  if (!a.weights_dir.empty() && std::filesystem::exists(path)) o.weights = path;
  return o;
}

at::Tensor imagenet_batch(int64_t count, int64_t size) {
  const std::filesystem::path dir =
      std::filesystem::path(kdeserve::testing::shared_dir()) / "data/imagenet/images";
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".JPEG") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "plan_budget: no .JPEG under %s (set KDESERVE_SHARED_DIR)\n",
                 dir.c_str());
    std::exit(1);
  }
  std::vector<at::Tensor> images;
  // Spread over the sorted (class-ordered) list, so the batch spans classes.
  const auto step = std::max<int64_t>(static_cast<int64_t>(files.size()) / count, 1);
  for (int64_t i = 0; i < count; ++i) {
    std::ifstream in(files[static_cast<size_t>((i * step) % static_cast<int64_t>(files.size()))],
                     std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    images.push_back(km::preprocess_imagenet(bytes, km::PreprocessOptions::for_crop(size)));
  }
  return at::stack(images);
}

// Candidates 0 and 1 are the paper's setting and the model's default; the grid follows.
void study(const std::string& title, const km::RecordedAttention& r,
           const att::AttentionOptions& paper, const att::AttentionOptions& current,
           const Args& a) {
  const int64_t nk = r.k.size(2);
  std::vector<att::KdeformerOptions> candidates = kde::candidate_grid(nk, current.kdeformer());
  if (a.quick) candidates.resize(std::min<size_t>(candidates.size(), 4));
  candidates.insert(candidates.begin(), {paper.kdeformer(), current.kdeformer()});
  std::printf("\n## %s: q [%lld, %lld, %lld, %lld], k/v Nk %lld, Dv %lld, scale %.4g\n",
              title.c_str(), static_cast<long long>(r.q.size(0)),
              static_cast<long long>(r.q.size(1)), static_cast<long long>(r.q.size(2)),
              static_cast<long long>(r.q.size(3)), static_cast<long long>(nk),
              static_cast<long long>(r.v.size(3)), r.scale);
  const std::vector<kde::BudgetPoint> points =
      kde::measure_budgets(r.q, r.k, r.v, r.scale, candidates, a.reps, 1);
  std::vector<size_t> order(points.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return points[x].seconds < points[y].seconds; });
  std::printf("| setting | rel error | centered | ms |\n|---|---|---|---|\n");
  for (size_t i : order) {
    const auto& p = points[i];
    std::printf("| %s%s | %.4f | %.4f | %.2f |\n", kde::describe(p.options).c_str(),
                i == 0 ? " (paper)" : i == 1 ? " (default)" : "", p.rel_error, p.centered_error,
                p.seconds * 1e3);
  }
  std::printf("paper: rel %.4f, centered %.4f, %.2f ms; default: rel %.4f, centered %.4f, %.2f "
              "ms\n",
              points[0].rel_error, points[0].centered_error, points[0].seconds * 1e3,
              points[1].rel_error, points[1].centered_error, points[1].seconds * 1e3);
  for (double t : a.targets) {
    const auto pick = kde::cheapest_within_error(points, t);
    if (pick) {
      std::printf("target %.3g: %s (rel %.4f, %.2f ms)\n", t, kde::describe(pick->options).c_str(),
                  pick->rel_error, pick->seconds * 1e3);
    } else {
      std::printf("target %.3g: no candidate reaches it\n", t);
    }
  }
  const auto same_time = kde::best_within_time(points, points[0].seconds);
  if (same_time) {
    std::printf("most accurate within the paper setting's %.2f ms: %s (rel %.4f vs %.4f)\n",
                points[0].seconds * 1e3, kde::describe(same_time->options).c_str(),
                same_time->rel_error, points[0].rel_error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "plan_budget: %s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--threads") {
      a.threads = std::stoi(next());
    } else if (s == "--images") {
      a.images = std::stoll(next());
    } else if (s == "--reps") {
      a.reps = std::stoll(next());
    } else if (s == "--targets") {
      a.targets = parse_list(next());
    } else if (s == "--biggan") {
      a.biggan = next();
    } else if (s == "--weights-dir") {
      a.weights_dir = next();
    } else if (s == "--quick") {
      a.quick = true;
      a.images = 1;
      a.reps = 1;
    } else {
      std::fprintf(stderr,
                   "usage: plan_budget [--threads N] [--images N] [--reps R] [--targets "
                   "0.02,0.05,0.1] [--biggan biggan-deep-128|256|512] [--weights-dir DIR] "
                   "[--quick]\n");
      return 2;
    }
  }
  att::set_num_threads(a.threads);
  std::printf("# plan_budget: %d thread(s), float32, %lld image(s), %lld rep(s)\n", a.threads,
              static_cast<long long>(a.images), static_cast<long long>(a.reps));

  {
    const std::string name = "t2t_vit_t_24";
    const auto model = km::create_model(name, load_options(a, name));
    std::printf("%s: %s\n", name.c_str(), model->weights_source().c_str());
    const at::Tensor images = imagenet_batch(a.images, model->spec().image_size);
    std::vector<km::RecordedAttention> rec;
    km::ForwardContext ctx;
    ctx.recorded = &rec;
    model->classify(images, model->plan_for(att::Method::kExact), ctx);
    const km::AttentionPlan& current = model->plan_for(att::Method::kKdeformer);
    const km::AttentionPlan paper = km::t2t_vit_paper_plan();
    for (const auto& r : rec) {
      if (r.group == "t2t_layer1" || r.group == "t2t_layer2") {
        study(name + " " + r.group, r, paper.at(r.group), current.at(r.group), a);
      }
    }
  }
  {
    const auto model = km::create_model(a.biggan, load_options(a, a.biggan));
    std::printf("\n%s: %s\n", a.biggan.c_str(), model->weights_source().c_str());
    const km::ModelSpec& spec = model->spec();
    const int64_t batch = std::max<int64_t>(a.images / 4, 1);
    at::Generator gen = at::detail::createCPUGenerator(7);
    const at::Tensor z = at::randn({batch, spec.z_dim}, gen, at::kFloat).clamp_(-2, 2).mul_(0.4);
    at::Tensor classes = at::zeros({batch, spec.num_classes});
    for (int64_t b = 0; b < batch; ++b) classes[b][(207 + 100 * b) % spec.num_classes] = 1;
    std::vector<km::RecordedAttention> rec;
    km::ForwardContext ctx;
    ctx.recorded = &rec;
    model->generate(z, classes, 0.4, model->plan_for(att::Method::kExact), ctx);
    const km::AttentionPlan& current = model->plan_for(att::Method::kKdeformer);
    const km::AttentionPlan paper = km::biggan_paper_plan();
    for (const auto& r : rec) {
      study(a.biggan + " " + r.group, r, paper.at(r.group), current.at(r.group), a);
    }
  }
  return 0;
}
