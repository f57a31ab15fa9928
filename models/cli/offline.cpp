// kdeserve-offline: runs a registered model without the server — classify image files with
// T2T-ViT, or generate PNG images with BigGAN-deep — with exact or KDEformer attention.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "attention/threads.h"
#include "models/biggan/noise.h"
#include "models/preprocess/image.h"
#include "models/preprocess/labels.h"
#include "models/registry.h"

namespace {

namespace fs = std::filesystem;
namespace km = kdeserve::models;
namespace att = kdeserve::attention;

constexpr const char* kUsage = R"(usage:
  kdeserve-offline list
  kdeserve-offline classify --model NAME [--weights FILE] [--attention exact|kdeformer]
                            [--top-k K] [--batch B] [--seed S] [--threads N] IMAGE|DIR ...
  kdeserve-offline generate --model NAME [--weights FILE] [--attention exact|kdeformer]
                            --classes C1,C2,... [--count N] [--seed S] [--truncation T]
                            [--out DIR] [--threads N]
Without --weights the model uses seeded random weights (outputs are meaningless).
--attention kdeformer (the default) runs the model's plan: KDEformer in the layer groups the
paper approximates (T2T layers 1-2 of T2T-ViT_t-*, BigGAN's self-attention), exact elsewhere;
--attention exact runs exact attention everywhere.
)";

struct Args {
  std::string command, model, weights, attention, out = "out/generated";
  std::vector<std::string> inputs;
  std::vector<int64_t> classes;
  int64_t top_k = 5, batch = 8, count = 1, threads = 0;
  uint64_t seed = 0;
  double truncation = 0.4;
};

std::vector<int64_t> parse_ints(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) throw std::invalid_argument("missing command");
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("missing value after " + f);
      return argv[++i];
    };
    if (f == "--model") a.model = value();
    else if (f == "--weights") a.weights = value();
    else if (f == "--attention") a.attention = value();
    else if (f == "--top-k") a.top_k = std::stoll(value());
    else if (f == "--batch") a.batch = std::stoll(value());
    else if (f == "--seed") a.seed = std::stoull(value());
    else if (f == "--threads") a.threads = std::stoll(value());
    else if (f == "--classes") a.classes = parse_ints(value());
    else if (f == "--count") a.count = std::stoll(value());
    else if (f == "--truncation") a.truncation = std::stod(value());
    else if (f == "--out") a.out = value();
    else if (f == "-h" || f == "--help") throw std::invalid_argument("");
    else if (!f.empty() && f[0] == '-') throw std::invalid_argument("unknown option " + f);
    else a.inputs.push_back(f);
  }
  return a;
}

std::unique_ptr<km::Model> load(const Args& a) {
  if (a.model.empty()) throw std::invalid_argument("--model is required");
  km::LoadOptions options;
  if (!a.weights.empty()) options.weights = a.weights;
  options.init_seed = a.seed;
  auto model = km::create_model(a.model, options);
  if (!model->has_weights()) {
    std::cerr << "\n*** WARNING: no --weights given: " << a.model
              << " runs on SEEDED RANDOM WEIGHTS (" << model->weights_source()
              << "). Its outputs are meaningless; convert the published checkpoint with "
                 "tools/convert_checkpoint.py and pass --weights FILE. ***\n\n";
  }
  return model;
}

km::AttentionPlan plan_for(const km::Model& model, const std::string& attention) {
  if (attention.empty()) return model.default_plan();
  return model.plan_for(att::method_from_string(attention));
}

std::string summarize(const std::vector<att::AttentionReport>& reports) {
  std::map<std::string, int> counts;
  for (const auto& r : reports) {
    std::string key = att::to_string(r.ran);
    if (r.fell_back) key += " (fallback: " + r.reason + ")";
    ++counts[key];
  }
  std::string out;
  for (const auto& [k, n] : counts) out += (out.empty() ? "" : ", ") + std::to_string(n) + "x " + k;
  return out.empty() ? "none" : out;
}

std::vector<fs::path> image_files(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const std::string& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(in)) {
        std::string ext = e.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
        if (e.is_regular_file() &&
            (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp")) {
          found.push_back(e.path());
        }
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.emplace_back(in);
    }
  }
  return files;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int classify(const Args& a) {
  auto model = load(a);
  TORCH_CHECK(model->spec().kind == km::ModelKind::kClassifier, a.model,
              " is a generator: use `generate`");
  const km::AttentionPlan plan = plan_for(*model, a.attention);
  const auto preprocess = km::PreprocessOptions::for_crop(model->spec().image_size);
  const std::vector<fs::path> files = image_files(a.inputs);
  if (files.empty()) throw std::invalid_argument("no image files given");
  std::cout << "model " << a.model << " (" << model->weights_source() << "), attention plan: "
            << plan.describe() << "\n";
  int failures = 0;
  for (size_t start = 0; start < files.size(); start += a.batch) {
    std::vector<at::Tensor> images;
    std::vector<fs::path> names;
    for (size_t i = start; i < std::min(files.size(), start + a.batch); ++i) {
      try {
        images.push_back(km::preprocess_imagenet(read_file(files[i]), preprocess));
        names.push_back(files[i]);
      } catch (const std::exception& e) {
        ++failures;
        std::cerr << files[i].string() << ": error: " << c10::GetExceptionString(e) << "\n";
      }
    }
    if (images.empty()) continue;
    std::vector<att::AttentionReport> reports;
    km::ForwardContext ctx;
    ctx.seed = a.seed;
    ctx.reports = &reports;
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor logits = model->classify(at::stack(images), plan, ctx);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto ranked = km::top_k(logits, a.top_k);
    for (const km::TopK& t : ranked) {
      if (t.rank == 0) std::cout << "\n" << names[t.row].string() << "\n";
      std::printf("  %lld. %6.2f%%  %4lld  %s  %s\n", static_cast<long long>(t.rank + 1),
                  100 * t.probability, static_cast<long long>(t.index), t.wnid.c_str(),
                  t.label.c_str());
    }
    std::fprintf(stderr, "[%zu/%zu] batch of %zu in %.0f ms; attention: %s\n",
                 std::min(files.size(), start + a.batch), files.size(), images.size(), ms,
                 summarize(reports).c_str());
  }
  return failures == 0 ? 0 : 1;
}

int generate(const Args& a) {
  auto model = load(a);
  TORCH_CHECK(model->spec().kind == km::ModelKind::kGenerator, a.model,
              " is a classifier: use `classify`");
  if (a.classes.empty()) throw std::invalid_argument("--classes is required");
  TORCH_CHECK(a.count >= 1, "--count must be >= 1");
  const km::AttentionPlan plan = plan_for(*model, a.attention);
  fs::create_directories(a.out);
  std::cout << "model " << a.model << " (" << model->weights_source() << "), attention plan: "
            << plan.describe() << ", truncation " << a.truncation << "\n";
  int64_t done = 0;
  const int64_t total = static_cast<int64_t>(a.classes.size()) * a.count;
  for (int64_t cls : a.classes) {
    for (int64_t i = 0; i < a.count; ++i) {
      // One image per call, with its own seed: the image depends only on (class, seed).
      const uint64_t seed = a.seed + static_cast<uint64_t>(i);
      const at::Tensor z = km::truncated_noise_sample(std::vector<uint64_t>{seed}, a.truncation,
                                                        model->spec().z_dim);
      const at::Tensor classes = km::one_hot_class_vector({cls}, model->spec().num_classes);
      std::vector<att::AttentionReport> reports;
      km::ForwardContext ctx;
      ctx.seed = seed;
      ctx.entry_seeds = {seed};
      ctx.reports = &reports;
      const auto t0 = std::chrono::steady_clock::now();
      const at::Tensor image = model->generate(z, classes, a.truncation, plan, ctx);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const at::Tensor rgb = km::to_uint8_rgb(image)[0].contiguous();  // [H, W, 3]
      cv::Mat mat(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3,
                  rgb.data_ptr<uint8_t>());
      cv::Mat bgr;
      cv::cvtColor(mat, bgr, cv::COLOR_RGB2BGR);
      const fs::path file = fs::path(a.out) / (a.model + "_class" + std::to_string(cls) +
                                               "_seed" + std::to_string(seed) + ".png");
      TORCH_CHECK(cv::imwrite(file.string(), bgr), "cannot write ", file.string());
      ++done;
      std::fprintf(stderr, "[%lld/%lld] %s (%s) in %.0f ms; attention: %s\n",
                   static_cast<long long>(done), static_cast<long long>(total),
                   file.string().c_str(), km::imagenet_class(cls).label.c_str(), ms,
                   summarize(reports).c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    att::set_num_threads(a.threads > 0 ? static_cast<int>(a.threads) : att::hardware_threads());
    if (a.command == "list") {
      for (const std::string& name : km::model_names()) {
        const km::ModelSpec s = km::model_spec(name);
        std::cout << name << "\t" << km::to_string(s.kind) << "\t" << s.input << " -> "
                  << s.output << "\n";
      }
      return 0;
    }
    if (a.command == "classify") return classify(a);
    if (a.command == "generate") return generate(a);
    throw std::invalid_argument("unknown command '" + a.command + "'");
  } catch (const std::invalid_argument& e) {
    if (*e.what()) std::cerr << "error: " << e.what() << "\n";
    std::cerr << kUsage;
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
