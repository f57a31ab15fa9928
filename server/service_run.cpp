// The Inference service's model side: loading and warm-up, batch execution, response filling.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "models/biggan/noise.h"
#include "models/preprocess/image.h"
#include "models/preprocess/labels.h"
#include "server/service_internal.h"

namespace kdeserve::server {

// FNV-1a: the per-image attention seed of Classify, so a result depends only on the image bytes.
uint64_t fnv1a(const std::string& bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t draw_seed() {
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard<std::mutex> lock(mutex);
  return rng();
}

namespace {

std::string new_request_id() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t prefix = draw_seed() & 0xffffffffULL;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08llx-%08llx", static_cast<unsigned long long>(prefix),
                static_cast<unsigned long long>(++counter));
  return buf;
}

}  // namespace

std::string request_id_of(const grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find("x-request-id");
  if (it != md.end() && !it->second.empty() && it->second.size() <= 128) {
    std::string id(it->second.data(), it->second.size());
    bool printable = true;
    for (char c : id) printable = printable && c > 32 && c < 127;
    if (printable) return id;
  }
  return new_request_id();
}

Clock::time_point steady_deadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return Clock::time_point::max();
  const auto left = deadline - std::chrono::system_clock::now();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

std::string encode_png(const at::Tensor& rgb) {  // uint8 [H, W, 3] contiguous
  cv::Mat mat(static_cast<int>(rgb.size(0)), static_cast<int>(rgb.size(1)), CV_8UC3,
              const_cast<uint8_t*>(rgb.data_ptr<uint8_t>()));
  cv::Mat bgr;
  cv::cvtColor(mat, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  if (!cv::imencode(".png", bgr, buf)) throw std::runtime_error("PNG encoding failed");
  return {buf.begin(), buf.end()};
}

std::shared_ptr<InferenceService::Job> make_job(Metrics& metrics,
                                                grpc::CallbackServerContext* context,
                                                const std::string& rpc) {
  auto job = std::make_shared<InferenceService::Job>();
  job->metrics = &metrics;
  job->context = context;
  job->reactor = context->DefaultReactor();
  job->rpc = rpc;
  job->request_id = request_id_of(context);
  metrics.add_inflight(1);
  return job;
}

void InferenceService::load_models() {
  for (auto& hp : hosted_) {
    Hosted& h = *hp;
    const auto t0 = Clock::now();
    km::LoadOptions options;
    options.weights = h.config.weights;
    options.init_seed = h.config.init_seed;
    options.device = c10::Device(h.config.device);
    // Loading and warm-up run on the compute thread, like every batch (server/executor.h).
    compute_.run([&] { h.model = km::create_model(h.config.name, options); });
    const double load_s = seconds_since(t0);
    if (!h.model->has_weights()) {
      spdlog::warn(
          "*** WARNING: model {} has no weights file and runs on SEEDED RANDOM WEIGHTS ({}). Its "
          "outputs are MEANINGLESS. Convert the checkpoint with tools/convert_checkpoint.py and "
          "set models[].weights or --model-weights {}=FILE. ***",
          h.config.name, h.model->weights_source(), h.config.name);
    }
    for (AttentionMode mode : {AttentionMode::kExact, AttentionMode::kKdeformer}) {
      h.plans[mode] = h.model->plan_for(to_method(mode));
    }
    const auto t1 = Clock::now();
    compute_.run([&] {
      for (AttentionMode mode : h.config.allowed_attention) {
        km::ForwardContext ctx;
        ctx.entry_seeds = {0};
        if (h.spec.kind == km::ModelKind::kClassifier) {
          const at::Tensor x = at::zeros({1, 3, h.spec.image_size, h.spec.image_size});
          (void)h.model->classify(x, h.plans.at(mode), ctx);
        } else {
          const at::Tensor z = km::truncated_noise_sample(std::vector<uint64_t>{0},
                                                          kDefaultTruncation, h.spec.z_dim);
          const at::Tensor c = km::one_hot_class_vector({0}, h.spec.num_classes);
          (void)h.model->generate(z, c, kDefaultTruncation, h.plans.at(mode), ctx);
        }
      }
    });
    const double warm_s = seconds_since(t1);
    metrics_.set_load_seconds(h.config.name, load_s, warm_s);

    BatcherOptions bo;
    bo.max_batch_size = h.config.batching.max_batch_size;
    bo.max_queue_delay = std::chrono::milliseconds(h.config.batching.max_queue_delay_ms);
    bo.max_queue_length = h.config.batching.max_queue_length;
    using TaskT = Batcher<std::shared_ptr<Job>>::Task;
    Batcher<std::shared_ptr<Job>>::Hooks hooks;
    Hosted* hosted = &h;
    auto drop = [this, hosted](TaskT& t, DropReason reason) {
      metrics_.rejected(hosted->config.name, to_string(reason));
      t.payload->finish(reason == DropReason::kDeadline
                            ? to_status(ErrorKind::kDeadlineExceeded,
                                        "the deadline passed while the request was queued")
                            : to_status(ErrorKind::kCancelled, "cancelled while queued"));
    };
    hooks.run = [this, hosted, drop](std::vector<TaskT>& batch) {
      compute_.run([&] {
        // Every hosted model shares the compute thread, so a batch may have waited here behind
        // another model's: deadlines and cancellations are checked again, and the queue time
        // runs until now.
        const auto start = Clock::now();
        std::vector<TaskT> live;
        for (TaskT& t : batch) {
          if (t.deadline <= start) {
            drop(t, DropReason::kDeadline);
          } else if (t.cancelled && t.cancelled()) {
            drop(t, DropReason::kCancelled);
          } else {
            live.push_back(std::move(t));
          }
        }
        batch = std::move(live);  // hooks.fail then finishes only the live ones
        if (batch.empty()) return;
        std::vector<std::shared_ptr<Job>> jobs;
        for (TaskT& t : batch) {
          const double queued = std::chrono::duration<double>(start - t.enqueued).count();
          metrics_.queued(hosted->config.name, queued);
          auto* timing = t.payload->classify_response
                             ? t.payload->classify_response->mutable_timing()
                             : t.payload->generate_response->mutable_timing();
          timing->set_queue_seconds(queued);
          jobs.push_back(t.payload);
        }
        if (hosted->spec.kind == km::ModelKind::kClassifier) {
          run_classify(*hosted, jobs);
        } else {
          run_generate(*hosted, jobs);
        }
      });
    };
    hooks.drop = drop;
    hooks.fail = [hosted](std::vector<TaskT>& batch, std::exception_ptr error) {
      const grpc::Status status = status_from_exception(error, hosted->config.name + " forward");
      for (TaskT& t : batch) t.payload->finish(status);
    };
    hooks.depth_changed = [this, hosted](size_t depth) {
      metrics_.set_queue_depth(hosted->config.name, static_cast<double>(depth));
    };
    h.batcher = std::make_unique<Batcher<std::shared_ptr<Job>>>(bo, std::move(hooks));
    h.ready = true;
    metrics_.set_model_ready(h.config.name, true);
    spdlog::info(
        "model {} ready: {} on {}, load {:.2f} s, warm-up {:.2f} s, default attention {}: {}",
        h.config.name, h.model->weights_source(), h.config.device, load_s, warm_s,
        to_string(h.config.default_attention), h.plans.at(h.config.default_attention).describe());
  }
  ready_ = true;
}

void InferenceService::shutdown() {
  ready_ = false;
  for (auto& h : hosted_) {
    if (h->batcher) h->batcher->shutdown();
    if (h->ready.exchange(false)) metrics_.set_model_ready(h->config.name, false);
  }
}

// The fields every Classify/Generate response carries about how it was computed.
template <typename Response>
void fill_common(Response* r, v1::AttentionMode mode, const std::string& plan_text, double compute,
                 int64_t batch, const std::string& request_id) {
  r->set_attention(mode);
  r->set_attention_plan(plan_text);
  r->mutable_timing()->set_compute_seconds(compute);
  r->mutable_timing()->set_batch_size(static_cast<uint32_t>(batch));
  r->set_request_id(request_id);
}

void InferenceService::run_classify(Hosted& h, std::vector<std::shared_ptr<Job>>& jobs) {
  std::vector<at::Tensor> images;
  km::ForwardContext ctx;
  const auto preprocess = km::PreprocessOptions::for_crop(h.spec.image_size);
  for (const auto& j : jobs) {
    // Normalisation is tensor math, so it runs here on the compute thread (server/executor.h).
    for (const at::Tensor& u8 : j->images) images.push_back(km::normalize_image(u8, preprocess));
    ctx.entry_seeds.insert(ctx.entry_seeds.end(), j->seeds.begin(), j->seeds.end());
  }
  const AttentionMode mode = jobs.front()->mode;
  const km::AttentionPlan& plan = h.plans.at(mode);
  const auto t0 = Clock::now();
  const at::Tensor logits = h.model->classify(at::stack(images), plan, ctx);
  const double compute = seconds_since(t0);
  const int64_t batch = static_cast<int64_t>(images.size());
  metrics_.batch_done(h.config.name, to_string(mode), batch, compute);
  const std::string plan_text = plan.describe();
  int64_t row = 0;
  for (const auto& j : jobs) {
    try {
      const int64_t n = static_cast<int64_t>(j->images.size());
      const auto ranked = km::top_k(logits.narrow(0, row, n), j->top_k);
      row += n;
      v1::ClassifyResponse* r = j->classify_response;
      r->set_model(h.config.name);
      for (int64_t i = 0; i < n; ++i) r->add_results();
      for (const km::TopK& t : ranked) {
        auto* p = r->mutable_results(static_cast<int>(t.row))->add_top_k();
        p->set_index(static_cast<uint32_t>(t.index));
        p->set_wnid(t.wnid);
        p->set_label(t.label);
        p->set_probability(static_cast<float>(t.probability));
      }
      fill_common(r, to_proto(mode), plan_text, compute, batch, j->request_id);
      j->finish(grpc::Status::OK);
    } catch (...) {
      j->finish(status_from_exception(std::current_exception(), "Classify response"));
    }
  }
}

void InferenceService::run_generate(Hosted& h, std::vector<std::shared_ptr<Job>>& jobs) {
  std::vector<at::Tensor> zs, classes;
  km::ForwardContext ctx;
  for (const auto& j : jobs) {
    zs.push_back(j->z);
    classes.push_back(j->classes);
    ctx.entry_seeds.insert(ctx.entry_seeds.end(), j->seeds.begin(), j->seeds.end());
  }
  const AttentionMode mode = jobs.front()->mode;
  const double truncation = jobs.front()->truncation;
  const km::AttentionPlan& plan = h.plans.at(mode);
  const auto t0 = Clock::now();
  const at::Tensor images =
      h.model->generate(at::cat(zs, 0), at::cat(classes, 0), truncation, plan, ctx);
  const double compute = seconds_since(t0);
  const at::Tensor rgb = km::to_uint8_rgb(images);  // [B, H, W, 3]
  const int64_t batch = rgb.size(0);
  metrics_.batch_done(h.config.name, to_string(mode), batch, compute);
  const std::string plan_text = plan.describe();
  int64_t row = 0;
  for (const auto& j : jobs) {
    try {
      v1::GenerateResponse* r = j->generate_response;
      r->set_model(h.config.name);
      for (int64_t i = 0; i < j->z.size(0); ++i, ++row) {
        const at::Tensor img = rgb[row].contiguous();
        auto* out = r->add_images();
        if (j->format == v1::IMAGE_FORMAT_PNG) {
          out->set_data(encode_png(img));
        } else {
          out->set_data(reinterpret_cast<const char*>(img.data_ptr<uint8_t>()),
                        static_cast<size_t>(img.numel()));
        }
        out->set_format(j->format);
        out->set_height(static_cast<uint32_t>(img.size(0)));
        out->set_width(static_cast<uint32_t>(img.size(1)));
        out->set_seed(j->seeds[static_cast<size_t>(i)]);
        const at::Tensor z = j->z[i].contiguous();
        const float* zp = z.data_ptr<float>();
        out->mutable_z()->Add(zp, zp + z.numel());
        out->set_truncation(j->truncation);
      }
      fill_common(r, to_proto(mode), plan_text, compute, batch, j->request_id);
      j->finish(grpc::Status::OK);
    } catch (...) {
      j->finish(status_from_exception(std::current_exception(), "Generate response"));
    }
  }
}

}  // namespace kdeserve::server
