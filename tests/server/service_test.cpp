// The Inference service in-process on a loopback port: readiness, results, batching, queue full,
// deadlines while queued, validation codes, metrics.
#include "server/service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "server/engine/engine.h"

namespace ks = kdeserve::server;
namespace v1 = kdeserve::v1;

namespace {

// A small config: the T2T-ViT-14 classifier and BigGAN-deep-128, random weights, batch ≤ 2.
ks::ServerConfig test_config() {
  ks::ServerConfig c = ks::parse_config_yaml(R"(
models:
  - name: t2t_vit_t_14
    default_attention: kdeformer
    batching: {max_batch_size: 4, max_queue_delay_ms: 20, max_queue_length: 8, max_items_per_request: 4}
  - name: biggan-deep-128
    default_attention: exact
    allowed_attention: [exact]
    batching: {max_batch_size: 1, max_queue_delay_ms: 0, max_queue_length: 1, max_items_per_request: 1}
)",
                                             "test");
  ks::validate(c);
  return c;
}

class ServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ks::set_compute_threads(2);
    metrics_ = new ks::Metrics("test", "test");
    service_ = new ks::InferenceService(test_config(), *metrics_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(port, 0);
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    server_->Shutdown();
    service_->shutdown();
    delete server_;
    delete service_;
    delete metrics_;
    delete channel_;
  }
  static void ensure_loaded() {
    if (!service_->ready()) service_->load_models();
  }
  std::unique_ptr<v1::Inference::Stub> stub() { return v1::Inference::NewStub(*channel_); }
  static std::string metrics_text() {
    return prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
  }
  // The metrics once they contain `needle`: a call is counted when gRPC is done with it, which
  // may be just after its client saw the reply.
  static std::string metrics_with(const std::string& needle) {
    std::string text = metrics_text();
    for (int i = 0; i < 500 && text.find(needle) == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      text = metrics_text();
    }
    return text;
  }

  static ks::Metrics* metrics_;
  static ks::InferenceService* service_;
  static grpc::Server* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
};
ks::Metrics* ServiceTest::metrics_ = nullptr;
ks::InferenceService* ServiceTest::service_ = nullptr;
grpc::Server* ServiceTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServiceTest::channel_ = nullptr;

v1::RawImage gray_image(uint8_t value) {
  v1::RawImage raw;
  raw.set_height(40);
  raw.set_width(30);
  raw.set_channels(3);
  std::string data(40 * 30 * 3, static_cast<char>(value));
  for (size_t i = 0; i < data.size(); i += 7) data[i] = static_cast<char>(i % 251);
  raw.set_data(data);
  return raw;
}

// Concurrent async calls; waits for all.
struct Calls {
  std::mutex mutex;
  std::condition_variable done_cv;
  int pending = 0;
  void start() {
    std::lock_guard<std::mutex> lock(mutex);
    ++pending;
  }
  void done() {
    std::lock_guard<std::mutex> lock(mutex);
    --pending;
    done_cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    done_cv.wait(lock, [&] { return pending == 0; });
  }
};

}  // namespace

// Runs first (gtest keeps declaration order): nothing is loaded yet.
TEST_F(ServiceTest, A_UnavailableBeforeModelsAreLoaded) {
  ASSERT_FALSE(service_->ready());
  grpc::ClientContext ctx;
  v1::ClassifyRequest req;
  req.set_model("t2t_vit_t_14");
  *req.add_images()->mutable_raw() = gray_image(1);
  v1::ClassifyResponse resp;
  EXPECT_EQ(stub()->Classify(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext ctx2;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub()->ListModels(&ctx2, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_FALSE(list.models(0).ready());
}

TEST_F(ServiceTest, ClassifyBatchesConcurrentRequestsIndependently) {
  ensure_loaded();
  // Alone first, then four concurrent single-image requests that share a batch.
  v1::ClassifyRequest req;
  req.set_model("t2t_vit_t_14");
  req.set_top_k(3);
  *req.add_images()->mutable_raw() = gray_image(7);
  v1::ClassifyResponse alone;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub()->Classify(&ctx, req, &alone).ok());
  }
  EXPECT_EQ(alone.attention(), v1::ATTENTION_MODE_KDEFORMER);
  EXPECT_EQ(alone.timing().batch_size(), 1u);
  EXPECT_FALSE(alone.request_id().empty());
  ASSERT_EQ(alone.results_size(), 1);
  ASSERT_EQ(alone.results(0).top_k_size(), 3);

  Calls calls;
  std::vector<v1::ClassifyResponse> resp(4);
  std::vector<grpc::ClientContext> ctx(4);
  std::vector<grpc::Status> status(4);
  auto s = stub();
  for (int i = 0; i < 4; ++i) {
    v1::ClassifyRequest r;
    r.set_model("t2t_vit_t_14");
    r.set_top_k(3);
    *r.add_images()->mutable_raw() = gray_image(i == 0 ? 7 : static_cast<uint8_t>(50 + i));
    calls.start();
    s->async()->Classify(&ctx[i], &r, &resp[i], [&, i](grpc::Status st) {
      status[i] = st;
      calls.done();
    });
  }
  calls.wait();
  uint32_t largest = 0;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i].error_message();
    largest = std::max(largest, resp[i].timing().batch_size());
  }
  EXPECT_GT(largest, 1u) << "concurrent requests were never batched";
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(resp[0].results(0).top_k(k).index(), alone.results(0).top_k(k).index());
    EXPECT_NEAR(resp[0].results(0).top_k(k).probability(), alone.results(0).top_k(k).probability(),
                1e-5);
  }
  const std::string ok5 =
      "kdeserve_requests_total{code=\"OK\",model=\"t2t_vit_t_14\",rpc=\"Classify\"} 5";
  const std::string text = metrics_with(ok5);
  EXPECT_NE(text.find(ok5), std::string::npos) << text;
}

TEST_F(ServiceTest, ValidationCodes) {
  ensure_loaded();
  auto code = [&](const v1::ClassifyRequest& r) {
    grpc::ClientContext ctx;
    v1::ClassifyResponse resp;
    return stub()->Classify(&ctx, r, &resp).error_code();
  };
  v1::ClassifyRequest r;
  r.set_model("nope");
  EXPECT_EQ(code(r), grpc::StatusCode::NOT_FOUND);
  r.set_model("t2t_vit_t_14");
  EXPECT_EQ(code(r), grpc::StatusCode::INVALID_ARGUMENT);  // no images
  *r.add_images()->mutable_raw() = gray_image(1);
  r.set_top_k(1001);
  EXPECT_EQ(code(r), grpc::StatusCode::INVALID_ARGUMENT);
  r.set_top_k(1);
  r.mutable_images(0)->mutable_raw()->set_channels(2);
  EXPECT_EQ(code(r), grpc::StatusCode::INVALID_ARGUMENT);
  r.mutable_images(0)->mutable_raw()->set_channels(3);
  r.mutable_images(0)->mutable_raw()->mutable_data()->pop_back();
  EXPECT_EQ(code(r), grpc::StatusCode::INVALID_ARGUMENT);
  r.mutable_images(0)->set_encoded("GIF89a not supported");
  EXPECT_EQ(code(r), grpc::StatusCode::INVALID_ARGUMENT);

  auto gen_code = [&](const v1::GenerateRequest& g) {
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    return stub()->Generate(&ctx, g, &resp).error_code();
  };
  v1::GenerateRequest g;
  g.set_model("biggan-deep-128");
  g.add_items()->set_class_id(3);
  g.set_attention(v1::ATTENTION_MODE_KDEFORMER);  // not allowed by this config
  EXPECT_EQ(gen_code(g), grpc::StatusCode::INVALID_ARGUMENT);
  g.set_attention(v1::ATTENTION_MODE_UNSPECIFIED);
  g.add_items()->set_class_id(4);  // 2 items > max_items_per_request 1
  EXPECT_EQ(gen_code(g), grpc::StatusCode::INVALID_ARGUMENT);
  g.mutable_items()->RemoveLast();
  g.mutable_items(0)->set_truncation(std::nan(""));
  EXPECT_EQ(gen_code(g), grpc::StatusCode::INVALID_ARGUMENT);
  g.mutable_items(0)->set_truncation(0);
  auto* w = g.mutable_items(0)->mutable_class_weights()->add_weights();
  w->set_class_id(2);
  w->set_weight(-1);
  EXPECT_EQ(gen_code(g), grpc::StatusCode::INVALID_ARGUMENT);
}

// A peer method the model's config does not allow, or an unknown mode, is INVALID_ARGUMENT
// naming the allowed modes, before the images are decoded (the image here is undecodable).
TEST_F(ServiceTest, AttentionModesOutsideTheConfigAreInvalidArgument) {
  ensure_loaded();
  auto classify = [&](v1::AttentionMode mode) {
    v1::ClassifyRequest r;
    r.set_model("t2t_vit_t_14");
    r.add_images()->set_encoded("GIF89a not supported");
    r.set_attention(mode);
    grpc::ClientContext ctx;
    v1::ClassifyResponse resp;
    return stub()->Classify(&ctx, r, &resp);
  };
  for (v1::AttentionMode mode : {v1::ATTENTION_MODE_PERFORMER, v1::ATTENTION_MODE_REFORMER,
                                 v1::ATTENTION_MODE_SCATTERBRAIN, v1::ATTENTION_MODE_HYPERATTENTION,
                                 v1::ATTENTION_MODE_WILDCAT, v1::ATTENTION_MODE_THINFORMER}) {
    const grpc::Status status = classify(mode);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find(" is not allowed for model t2t_vit_t_14 (allowed: "
                                          "exact, kdeformer)"),
              std::string::npos)
        << status.error_message();
  }
  EXPECT_NE(classify(v1::ATTENTION_MODE_WILDCAT).error_message().find("attention wildcat "),
            std::string::npos);
  const grpc::Status unknown = classify(static_cast<v1::AttentionMode>(99));
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(unknown.error_message().find(
                "unknown attention mode 99 (allowed for model t2t_vit_t_14: exact, kdeformer)"),
            std::string::npos)
      << unknown.error_message();
  // An allowed mode reaches the decoder (and fails there): the check above came first.
  EXPECT_NE(classify(v1::ATTENTION_MODE_EXACT).error_message().find("images[0]"),
            std::string::npos);

  v1::GenerateRequest g;
  g.set_model("biggan-deep-128");
  g.add_items()->set_class_id(3);
  g.set_attention(v1::ATTENTION_MODE_THINFORMER);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  const grpc::Status gen = stub()->Generate(&ctx, g, &resp);
  EXPECT_EQ(gen.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(gen.error_message().find(
                "attention thinformer is not allowed for model biggan-deep-128 (allowed: exact)"),
            std::string::npos)
      << gen.error_message();
}

// ModelInfo lists the plan of every allowed mode, with each group's settings.
TEST_F(ServiceTest, ModelInfoListsThePlanOfEachAllowedMode) {
  ensure_loaded();
  v1::GetModelInfoRequest request;
  request.set_model("t2t_vit_t_14");
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub()->GetModelInfo(&ctx, request, &info).ok());
  ASSERT_EQ(info.allowed_attention_size(), 2);
  ASSERT_EQ(info.plans_size(), 2);
  EXPECT_EQ(info.plans(0).attention(), v1::ATTENTION_MODE_EXACT);
  EXPECT_EQ(info.plans(0).description(), "blocks=exact, t2t_layer1=exact, t2t_layer2=exact");
  EXPECT_EQ(info.plans(1).attention(), v1::ATTENTION_MODE_KDEFORMER);
  EXPECT_EQ(info.plans(1).description(),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=0,r=7,cv,clamped), "
            "t2t_layer2=kdeformer(b=32,m=0,r=7,cv,clamped)");
  ASSERT_EQ(info.plans(1).layers_size(), 3);
  EXPECT_EQ(info.plans(1).layers(1).group(), "t2t_layer1");
  EXPECT_EQ(info.plans(1).layers(1).settings(), "kdeformer(b=32,m=0,r=7,cv,clamped)");
  EXPECT_EQ(info.plans(1).layers(1).sample_size(), 0u);
  ASSERT_EQ(info.attention_plan_size(), 3);  // the default's, as before
  EXPECT_EQ(info.attention_plan(2).settings(), "kdeformer(b=32,m=0,r=7,cv,clamped)");
}

TEST_F(ServiceTest, GenerateIsReproducibleAndQueueFullIsResourceExhausted) {
  ensure_loaded();
  v1::GenerateRequest g;
  g.set_model("biggan-deep-128");
  g.set_format(v1::IMAGE_FORMAT_RAW_RGB8);
  auto* item = g.add_items();
  item->set_class_id(207);
  item->set_seed(11);
  v1::GenerateResponse first;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub()->Generate(&ctx, g, &first).ok());
  }
  ASSERT_EQ(first.images_size(), 1);
  EXPECT_EQ(first.images(0).data().size(), 128u * 128 * 3);
  EXPECT_EQ(first.attention(), v1::ATTENTION_MODE_EXACT);

  // Queue length 1, batch size 1: of 6 simultaneous calls, one runs, one waits, the rest are
  // refused at once.
  constexpr int kCalls = 6;
  Calls calls;
  std::vector<v1::GenerateResponse> resp(kCalls);
  std::vector<grpc::ClientContext> ctx(kCalls);
  std::vector<grpc::Status> status(kCalls);
  auto s = stub();
  for (int i = 0; i < kCalls; ++i) {
    calls.start();
    s->async()->Generate(&ctx[i], &g, &resp[i], [&, i](grpc::Status st) {
      status[i] = st;
      calls.done();
    });
  }
  calls.wait();
  int ok = 0, exhausted = 0;
  for (int i = 0; i < kCalls; ++i) {
    if (status[i].ok()) {
      ++ok;
      EXPECT_EQ(resp[i].images(0).data(), first.images(0).data()) << "same seed, other image";
    } else {
      EXPECT_EQ(status[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << status[i].error_message();
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
  const std::string count =
      "kdeserve_rejected_total{model=\"biggan-deep-128\",reason=\"queue_full\"} " +
      std::to_string(exhausted);
  EXPECT_NE(metrics_with(count).find(count), std::string::npos) << count << "\n" << metrics_text();
}

TEST_F(ServiceTest, DeadlinePassedWhileQueuedIsNotComputed) {
  ensure_loaded();
  // A 4-image classify batch keeps the worker busy; a call with a short deadline waits behind.
  v1::ClassifyRequest big;
  big.set_model("t2t_vit_t_14");
  for (int i = 0; i < 4; ++i)
    *big.add_images()->mutable_raw() = gray_image(static_cast<uint8_t>(i));
  v1::ClassifyRequest small;
  small.set_model("t2t_vit_t_14");
  small.set_attention(v1::ATTENTION_MODE_EXACT);  // another key: never joins big's batch
  *small.add_images()->mutable_raw() = gray_image(99);

  auto s = stub();
  // Timings relative to one big batch, measured here, so they hold on fast and slow machines:
  // small arrives at 30% of big's run with a deadline of another 30%, so it expires queued.
  auto batch = std::chrono::steady_clock::duration::max();
  for (int i = 0; i < 3; ++i) {  // the fastest of three: later calls run warm
    const auto t0 = std::chrono::steady_clock::now();
    grpc::ClientContext ctx;
    v1::ClassifyResponse resp;
    ASSERT_TRUE(s->Classify(&ctx, big, &resp).ok());
    batch = std::min(batch, std::chrono::steady_clock::now() - t0);
  }
  // On a shared machine one batch's time varies several-fold: small may be answered before its
  // deadline, or taken from the queue in time and expire while it computes. Then the setup did
  // not happen (small did not expire queued), and it is tried again.
  const std::string exact_batches =
      "kdeserve_compute_duration_seconds_count{attention=\"exact\",model=\"t2t_vit_t_14\"}";
  const std::string deadline_drops =
      "kdeserve_rejected_total{model=\"t2t_vit_t_14\",reason=\"deadline\"}";
  const auto count_of = [](const std::string& text, const std::string& series) {
    const size_t at = text.find(series + " ");
    return at == std::string::npos ? 0.0 : std::stod(text.substr(at + series.size() + 1));
  };
  grpc::Status small_status;
  double exact_before = 0, exact_after = 0, drops_before = 0, drops_after = 0;
  for (int attempt = 0; attempt < 6; ++attempt) {
    const std::string before = metrics_text();
    exact_before = count_of(before, exact_batches);
    drops_before = count_of(before, deadline_drops);
    Calls calls;
    grpc::ClientContext big_ctx, small_ctx;
    v1::ClassifyResponse big_resp, small_resp;
    grpc::Status big_status;
    std::chrono::steady_clock::duration big_took{};
    const auto big_start = std::chrono::steady_clock::now();
    calls.start();
    s->async()->Classify(&big_ctx, &big, &big_resp, [&](grpc::Status st) {
      big_status = st;
      big_took = std::chrono::steady_clock::now() - big_start;
      calls.done();
    });
    std::this_thread::sleep_for(batch * 3 / 10);  // big is running
    small_ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(
                               batch * 3 / 10));
    calls.start();
    s->async()->Classify(&small_ctx, &small, &small_resp, [&](grpc::Status st) {
      small_status = st;
      calls.done();
    });
    calls.wait();
    ASSERT_TRUE(big_status.ok()) << big_status.error_message();
    batch = std::min(batch, big_took);  // the next attempt's timings follow a faster batch
    if (small_status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) continue;
    // The server's verdict on small comes after its client's: dropped from the queue (counted
    // when the worker reaches it) or computed too late (counted when the batch ends).
    for (int i = 0; i < 3000; ++i) {
      const std::string text = metrics_text();
      exact_after = count_of(text, exact_batches);
      drops_after = count_of(text, deadline_drops);
      if (exact_after > exact_before || drops_after > drops_before) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (exact_after == exact_before) break;
  }
  ASSERT_EQ(small_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(drops_after, drops_before + 1) << "the expired request was not dropped from the queue";
  EXPECT_EQ(exact_after, exact_before) << "the expired exact-attention request was computed";
}
