// The shadow check in-process (server/shadow.h, service_shadow.cpp): the configured fraction of
// approximate batches is checked after its response, exact batches never are, a check is
// skipped or stopped when a request waits, the compute budget holds, and the figures reach the
// metrics. (The figures' values are checked against an independent computation in
// tests/server/engine/shadow_engine_test.cpp.)
#include "server/service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <future>
#include <regex>
#include <string>
#include <thread>

#include "server/engine/engine.h"

namespace ks = kdeserve::server;
namespace v1 = kdeserve::v1;

namespace {

ks::ServerConfig shadow_config() {
  ks::ServerConfig c = ks::parse_config_yaml(R"(
models:
  - name: t2t_vit_t_14
    default_attention: kdeformer
    shadow: {fraction: 0.5, max_compute_share: 1}
    batching: {max_batch_size: 2, max_queue_delay_ms: 0, max_items_per_request: 2}
  - name: biggan-deep-128
    default_attention: kdeformer
    shadow: {fraction: 1, max_compute_share: 0.000001}
    batching: {max_batch_size: 1, max_queue_delay_ms: 0, max_items_per_request: 1}
)",
                                             "test");
  ks::validate(c);
  return c;
}

class ShadowServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ks::set_compute_threads(2);
    metrics_ = new ks::Metrics("test", "test");
    service_ = new ks::InferenceService(shadow_config(), *metrics_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(port, 0);
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    service_->load_models();
  }
  static void TearDownTestSuite() {
    server_->Shutdown();
    service_->shutdown();
    delete server_;
    delete service_;
    delete metrics_;
    delete channel_;
  }

  static std::string metrics_text() {
    return prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
  }
  // The value of one series (0 when absent).
  static double value(const std::string& series) {
    const std::string text = metrics_text();
    const auto at = text.find(series + " ");
    return at == std::string::npos ? 0.0 : std::stod(text.substr(at + series.size() + 1));
  }
  static double checks(const std::string& model, const std::string& outcome,
                       const std::string& attention = "kdeformer") {
    return value("kdeserve_shadow_checks_total{attention=\"" + attention + "\",model=\"" + model +
                 "\",outcome=\"" + outcome + "\"}");
  }
  // Every approximate batch of `model` has an outcome (the check ran or was skipped).
  static double settled(const std::string& model) {
    double total = 0;
    for (const char* o : {"run", "not_sampled", "busy", "queue", "preempted", "budget", "failed"}) {
      total += checks(model, o);
    }
    return total;
  }
  static void wait_settled(const std::string& model, double batches) {
    for (int i = 0; i < 3000 && settled(model) < batches; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(settled(model), batches) << metrics_text();
  }

  static grpc::Status classify(v1::AttentionMode mode, uint8_t shade) {
    v1::ClassifyRequest r;
    r.set_model("t2t_vit_t_14");
    r.set_attention(mode);
    auto* raw = r.add_images()->mutable_raw();
    raw->set_height(32);
    raw->set_width(32);
    raw->set_channels(3);
    raw->set_data(std::string(32 * 32 * 3, static_cast<char>(shade)));
    v1::ClassifyResponse response;
    grpc::ClientContext ctx;
    return v1::Inference::NewStub(*channel_)->Classify(&ctx, r, &response);
  }
  static grpc::Status generate(uint64_t seed) {
    v1::GenerateRequest r;
    r.set_model("biggan-deep-128");
    auto* item = r.add_items();
    item->set_class_id(1);
    item->set_seed(seed);
    v1::GenerateResponse response;
    grpc::ClientContext ctx;
    return v1::Inference::NewStub(*channel_)->Generate(&ctx, r, &response);
  }

  static ks::Metrics* metrics_;
  static ks::InferenceService* service_;
  static grpc::Server* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
};
ks::Metrics* ShadowServiceTest::metrics_ = nullptr;
ks::InferenceService* ShadowServiceTest::service_ = nullptr;
grpc::Server* ShadowServiceTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ShadowServiceTest::channel_ = nullptr;

}  // namespace

TEST_F(ShadowServiceTest, A_HalfOfTheApproximateBatchesAreCheckedWhenIdle) {
  const std::string m = "t2t_vit_t_14";
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(classify(v1::ATTENTION_MODE_KDEFORMER, static_cast<uint8_t>(40 + i)).ok());
    wait_settled(m, i + 1);  // nothing else is sent while the check runs
  }
  EXPECT_EQ(checks(m, "not_sampled"), 2);
  EXPECT_EQ(checks(m, "run"), 2) << metrics_text();
  ASSERT_TRUE(classify(v1::ATTENTION_MODE_EXACT, 1).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(settled(m), 4) << "an exact batch is never checked";
  // Two checked images: one output comparison and one error per approximated layer each.
  const std::string k = "{attention=\"kdeformer\",model=\"" + m + "\"}";
  EXPECT_EQ(value("kdeserve_shadow_outputs_total" + k), 2);
  EXPECT_EQ(value("kdeserve_shadow_max_probability_difference_count" + k), 2);
  for (const char* group : {"t2t_layer1", "t2t_layer2"}) {
    for (const char* norm : {"frobenius", "spectral"}) {
      const std::string series = std::string("kdeserve_shadow_attention_relative_error_count{") +
                                 "attention=\"kdeformer\",layer_group=\"" + group +
                                 "\",model=\"" + m + "\",norm=\"" + norm + "\"}";
      EXPECT_EQ(value(series), 2) << series;
    }
  }
  EXPECT_GT(value("kdeserve_shadow_compute_seconds_total{model=\"" + m + "\"}"), 0);
}

TEST_F(ShadowServiceTest, B_ACheckGivesWayToARequest) {
  const std::string m = "t2t_vit_t_14";
  // The credit is 0 (fresh, or after test A's four batches): this batch is not picked, the
  // next one is.
  const double before = settled(m);
  ASSERT_TRUE(classify(v1::ATTENTION_MODE_KDEFORMER, 90).ok());
  wait_settled(m, before + 1);
  const double before_run = checks(m, "run");
  // The picked batch runs while two Generates arrive (one item per batch): the first runs when
  // the classifier's batch ends, the check waits behind it, and when its turn comes the second
  // Generate is waiting: the check is skipped ("queue"; "preempted" had it already started).
  // Its queue time is observed when its batch starts on the compute thread: only then are the
  // Generates sent (a fixed sleep let them overtake its decoding under TSan).
  const std::string started = "kdeserve_queue_duration_seconds_count{model=\"" + m + "\"}";
  const double started_before = value(started);
  auto classifier = std::async(std::launch::async,
                               [] { return classify(v1::ATTENTION_MODE_KDEFORMER, 91); });
  for (int i = 0; i < 2000 && value(started) < started_before + 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(value(started), started_before + 1) << metrics_text();
  auto generate_exact = [] {
    v1::GenerateRequest g;
    g.set_model("biggan-deep-128");
    g.set_attention(v1::ATTENTION_MODE_EXACT);
    g.add_items()->set_class_id(3);
    v1::GenerateResponse response;
    grpc::ClientContext ctx;
    return v1::Inference::NewStub(*channel_)->Generate(&ctx, g, &response);
  };
  auto first = std::async(std::launch::async, generate_exact);
  auto second = std::async(std::launch::async, generate_exact);
  ASSERT_TRUE(first.get().ok());
  ASSERT_TRUE(second.get().ok());
  ASSERT_TRUE(classifier.get().ok());
  wait_settled(m, before + 2);
  EXPECT_EQ(checks(m, "run"), before_run) << metrics_text();
  EXPECT_EQ(checks(m, "queue") + checks(m, "preempted"), 1) << metrics_text();
}

TEST_F(ShadowServiceTest, C_TheComputeBudgetHolds) {
  const std::string m = "biggan-deep-128";
  ASSERT_TRUE(generate(1).ok());
  wait_settled(m, 1);
  EXPECT_EQ(checks(m, "run"), 1) << "nothing spent yet: the first check fits";
  const std::string k = "{attention=\"kdeformer\",model=\"" + m + "\"}";
  EXPECT_EQ(value("kdeserve_shadow_psnr_db_count" + k), 1);
  ASSERT_TRUE(generate(2).ok());
  wait_settled(m, 2);
  EXPECT_EQ(checks(m, "budget"), 1) << "a share of 1e-6 is spent by one check";
}
