#include "client/cli_commands.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "client/client.h"

namespace kdeserve::client {

namespace fs = std::filesystem;

namespace {

struct LocalError {
  std::string message;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LocalError{"cannot read " + path};
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw LocalError{"error reading " + path};
  return bytes;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw LocalError{"cannot write " + path.string()};
}

int rpc_failure(const std::string& what, const Status& status, std::ostream& err) {
  err << "kdeserve-cli: " << what << " failed: " << status.to_string() << "\n";
  return exit_code_for(status.code);
}

ClientOptions client_options(const CliArgs& args) {
  ClientOptions options;
  options.deadline = std::chrono::milliseconds(
      static_cast<int64_t>(std::llround(args.deadline_seconds * 1000.0)));
  options.max_receive_message_size = args.max_receive_mib * 1024 * 1024;
  if (args.tls) {
    options.tls_root_certs = args.tls_ca_file.empty() ? std::string() : read_file(args.tls_ca_file);
  }
  return options;
}

std::string kind_name(v1::ModelKind kind) {
  switch (kind) {
    case v1::MODEL_KIND_CLASSIFIER: return "classifier";
    case v1::MODEL_KIND_GENERATOR: return "generator";
    default: return "unknown";
  }
}

// Resolves an empty --model to the first hosted model of this kind. Returns an exit code
// (kExitOk when model is set).
int resolve_model(const Client& client, v1::ModelKind kind, std::string& model,
                  std::ostream& err) {
  if (!model.empty()) return kExitOk;
  auto models = client.list_models();
  if (!models.ok()) return rpc_failure("ListModels (to choose a model)", models.status(), err);
  for (const auto& info : *models) {
    if (info.kind() == kind) {
      model = info.name();
      err << "kdeserve-cli: using model " << model << " (pass --model to choose)\n";
      return kExitOk;
    }
  }
  err << "kdeserve-cli: the server hosts no " << kind_name(kind) << "; pass --model\n";
  return exit_code_for(grpc::StatusCode::NOT_FOUND);
}

std::string timing_text(const v1::Timing& timing) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(3) << "queue " << timing.queue_seconds() << " s, compute "
       << timing.compute_seconds() << " s, server batch " << timing.batch_size();
  return text.str();
}

int run_classify(const CliArgs& args, const Client& client, std::ostream& out,
                 std::ostream& err) {
  std::vector<std::string> paths;
  try {
    paths = expand_image_paths(args.paths);
  } catch (const std::runtime_error& e) {
    err << "kdeserve-cli: " << e.what() << "\n";
    return kExitLocalError;
  }
  if (paths.empty()) {
    err << "kdeserve-cli: no image files found in the given paths\n";
    return kExitLocalError;
  }
  std::string model = args.model;
  if (int code = resolve_model(client, v1::MODEL_KIND_CLASSIFIER, model, err)) return code;
  const size_t batches = (paths.size() + args.batch - 1) / args.batch;
  size_t done = 0;
  for (size_t b = 0; b < batches; ++b) {
    const size_t begin = b * args.batch;
    const size_t end = std::min(paths.size(), begin + args.batch);
    std::vector<std::string> images;
    for (size_t i = begin; i < end; ++i) images.push_back(read_file(paths[i]));
    auto start = std::chrono::steady_clock::now();
    auto response = client.classify(model, images, args.top_k, args.attention);
    if (!response.ok()) {
      err << "kdeserve-cli: batch " << b + 1 << "/" << batches << " (" << paths[begin] << " ...)\n";
      return rpc_failure("Classify", response.status(), err);
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    done += images.size();
    err << "[" << done << "/" << paths.size() << "] batch " << b + 1 << "/" << batches << ": "
        << images.size() << " images in " << std::fixed << std::setprecision(3) << seconds
        << " s (" << timing_text(response->timing()) << "), attention "
        << attention_mode_name(response->attention()) << "\n";
    err.unsetf(std::ios::floatfield);
    for (size_t i = begin; i < end; ++i) {
      out << paths[i] << "\n";
      int rank = 1;
      for (const auto& p : response->results(static_cast<int>(i - begin)).top_k()) {
        out << "  " << rank++ << ". " << std::fixed << std::setprecision(4) << p.probability()
            << "  " << p.index() << "  " << p.wnid() << "  " << p.label() << "\n";
      }
    }
    out.unsetf(std::ios::floatfield);
  }
  return kExitOk;
}

int run_generate(const CliArgs& args, const Client& client, std::ostream& out,
                 std::ostream& err) {
  std::string model = args.model;
  if (int code = resolve_model(client, v1::MODEL_KIND_GENERATOR, model, err)) return code;
  std::vector<v1::GenerateItem> items;
  std::vector<uint32_t> item_classes;
  for (uint32_t class_id : args.classes) {
    for (uint32_t n = 0; n < args.count; ++n) {
      std::optional<uint64_t> seed;
      if (args.seed) seed = *args.seed + items.size();
      items.push_back(make_generate_item(class_id, seed, args.truncation));
      item_classes.push_back(class_id);
    }
  }
  std::error_code ec;
  fs::create_directories(args.out_dir, ec);
  if (ec) {
    err << "kdeserve-cli: cannot create " << args.out_dir << ": " << ec.message() << "\n";
    return kExitLocalError;
  }
  err << "generating " << items.size() << " image(s) with " << model << " ...\n";
  auto start = std::chrono::steady_clock::now();
  auto response = client.generate(model, items, v1::IMAGE_FORMAT_PNG, args.attention);
  if (!response.ok()) return rpc_failure("Generate", response.status(), err);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  err << "done in " << std::fixed << std::setprecision(3) << seconds << " s ("
      << timing_text(response->timing()) << "), attention "
      << attention_mode_name(response->attention()) << "\n";
  err.unsetf(std::ios::floatfield);
  std::string seeds;
  for (int i = 0; i < response->images_size(); ++i) {
    const auto& image = response->images(i);
    if (image.format() != v1::IMAGE_FORMAT_PNG) {
      err << "kdeserve-cli: server returned a non-PNG image for item " << i << "\n";
      return exit_code_for(grpc::StatusCode::INTERNAL);
    }
    std::ostringstream name;
    name << model << "_class" << item_classes[i] << "_seed" << image.seed() << ".png";
    fs::path path = fs::path(args.out_dir) / name.str();
    write_file(path, image.data());
    out << path.string() << "  class " << item_classes[i] << "  seed " << image.seed()
        << "  truncation " << image.truncation() << "  " << image.width() << "x"
        << image.height() << "\n";
    seeds += (seeds.empty() ? "" : ",") + std::to_string(image.seed());
  }
  out << "seeds: " << seeds << "\n";
  return kExitOk;
}

void print_model(const v1::ModelInfo& info, std::ostream& out) {
  out << "name:              " << info.name() << "\n"
      << "kind:              " << kind_name(info.kind()) << "\n"
      << "ready:             " << (info.ready() ? "yes" : "no") << "\n"
      << "device:            " << info.device() << "\n"
      << "image size:        " << info.image_size() << "\n"
      << "max batch size:    " << info.max_batch_size() << "\n"
      << "input:             " << info.input() << "\n"
      << "output:            " << info.output() << "\n"
      << "weights:           " << info.weights_source() << "\n"
      << "default attention: " << attention_mode_name(info.default_attention()) << "\n"
      << "allowed attention:";
  for (int mode : info.allowed_attention()) {
    out << " " << attention_mode_name(static_cast<v1::AttentionMode>(mode));
  }
  out << "\nattention plan:\n";
  for (const auto& layer : info.attention_plan()) {
    out << "  " << layer.group() << ": "
        << (layer.settings().empty() ? layer.method() : layer.settings());
    if (layer.settings().empty() && layer.method() == "kdeformer") {  // an older server
      out << " (bucket " << layer.bucket_size() << ", samples " << layer.sample_size()
          << ", projections " << layer.num_projections() << ")";
    }
    out << "\n";
  }
  if (info.plans_size() > 0) out << "plans of the allowed modes:\n";
  for (const auto& plan : info.plans()) {
    out << "  " << attention_mode_name(plan.attention()) << ": " << plan.description() << "\n";
  }
}

int run_models(const CliArgs& args, const Client& client, std::ostream& out, std::ostream& err) {
  if (!args.model.empty()) {
    auto info = client.model_info(args.model);
    if (!info.ok()) return rpc_failure("GetModelInfo", info.status(), err);
    print_model(*info, out);
    return kExitOk;
  }
  auto models = client.list_models();
  if (!models.ok()) return rpc_failure("ListModels", models.status(), err);
  out << std::left << std::setw(24) << "NAME" << std::setw(12) << "KIND" << std::setw(7)
      << "READY" << std::setw(10) << "DEVICE" << std::setw(6) << "SIZE" << std::setw(10)
      << "MAX_BATCH" << "ATTENTION (default; allowed)\n";
  for (const auto& info : *models) {
    std::string allowed;
    for (int mode : info.allowed_attention()) {
      allowed += (allowed.empty() ? "" : ",") +
                 attention_mode_name(static_cast<v1::AttentionMode>(mode));
    }
    out << std::setw(24) << info.name() << std::setw(12) << kind_name(info.kind()) << std::setw(7)
        << (info.ready() ? "yes" : "no") << std::setw(10) << info.device() << std::setw(6)
        << info.image_size() << std::setw(10) << info.max_batch_size()
        << attention_mode_name(info.default_attention()) << "; " << allowed << "\n";
  }
  out << std::right;
  return kExitOk;
}

int run_health(const CliArgs& args, const Client& client, std::ostream& out, std::ostream& err) {
  auto status = client.health(args.service);
  const std::string label = args.service.empty() ? "\"\" (liveness)" : args.service;
  if (!status.ok()) return rpc_failure("health check of " + label, status.status(), err);
  out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status) << "\n";
  if (*status == grpc::health::v1::HealthCheckResponse::SERVING) return kExitOk;
  err << "kdeserve-cli: service " << label << " is not serving\n";
  return kExitNotServing;
}

bool is_image_name(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp";
}

}  // namespace

std::vector<std::string> expand_image_paths(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& path : paths) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(path)) {
        if (entry.is_regular_file() && is_image_name(entry.path())) {
          found.push_back(entry.path().string());
        }
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(path, ec)) {
      files.push_back(path);
    } else {
      throw std::runtime_error("no such file or directory: " + path);
    }
  }
  return files;
}

int run_cli(const CliArgs& args, std::ostream& out, std::ostream& err) {
  if (args.command == Command::kHelp) {
    out << cli_usage();
    return kExitOk;
  }
  try {
    Client client(args.address, client_options(args));
    switch (args.command) {
      case Command::kClassify: return run_classify(args, client, out, err);
      case Command::kGenerate: return run_generate(args, client, out, err);
      case Command::kModels: return run_models(args, client, out, err);
      case Command::kHealth: return run_health(args, client, out, err);
      case Command::kHelp: break;
    }
  } catch (const LocalError& e) {
    err << "kdeserve-cli: " << e.message << "\n";
    return kExitLocalError;
  }
  return kExitOk;
}

}  // namespace kdeserve::client
