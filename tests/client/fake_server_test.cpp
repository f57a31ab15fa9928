// The client library and kdeserve-cli against an in-process fake kdeserve.v1.Inference service
// (a real gRPC server on a free loopback port) with gRPC's default health service.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "client/cli_args.h"
#include "client/cli_commands.h"
#include "client/client.h"

namespace kdeserve::client {
namespace {

namespace fs = std::filesystem;
using grpc::ServerContext;
using grpc::StatusCode;

// Answers by model name: "missing" NOT_FOUND, "busy" RESOURCE_EXHAUSTED, "bad" INVALID_ARGUMENT,
// "broken" INTERNAL, "draining" UNAVAILABLE, "slow" waits until cancelled, "huge" returns
// 5 MiB images; anything else succeeds. Classify's top class index is the image's byte count.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status Classify(ServerContext* context, const v1::ClassifyRequest* request,
                        v1::ClassifyResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_classify_ = *request;
      ++classify_calls_;
    }
    if (auto error = error_for(context, request->model())) return *error;
    response->set_model(request->model());
    response->set_attention(request->attention() == v1::ATTENTION_MODE_UNSPECIFIED
                                ? v1::ATTENTION_MODE_EXACT
                                : request->attention());
    response->mutable_timing()->set_batch_size(request->images_size());
    const uint32_t k = request->top_k() == 0 ? 5 : request->top_k();
    for (const auto& image : request->images()) {
      auto* result = response->add_results();
      for (uint32_t r = 0; r < k; ++r) {
        auto* p = result->add_top_k();
        p->set_index(static_cast<uint32_t>((image.encoded().size() + r) % 1000));
        p->set_wnid("n0000000" + std::to_string(r));
        p->set_label("label" + std::to_string(p->index()));
        p->set_probability(0.5f / static_cast<float>(r + 1));
      }
    }
    response->set_request_id("req-1");
    return grpc::Status::OK;
  }

  grpc::Status Generate(ServerContext* context, const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_generate_ = *request;
    }
    if (auto error = error_for(context, request->model())) return *error;
    response->set_model(request->model());
    response->set_attention(v1::ATTENTION_MODE_KDEFORMER);
    for (int i = 0; i < request->items_size(); ++i) {
      const auto& item = request->items(i);
      auto* image = response->add_images();
      const size_t bytes = request->model() == "huge" ? 5u << 20 : 16u;
      image->set_data(std::string("\x89PNG", 4) + std::string(bytes - 4, static_cast<char>(i)));
      image->set_format(request->format() == v1::IMAGE_FORMAT_UNSPECIFIED ? v1::IMAGE_FORMAT_PNG
                                                                         : request->format());
      image->set_height(128);
      image->set_width(128);
      image->set_seed(item.noise_case() == v1::GenerateItem::kSeed ? item.seed() : 9000 + i);
      image->set_truncation(item.truncation() == 0 ? 0.4 : item.truncation());
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    for (const auto& model : models()) *response->add_models() = model;
    return grpc::Status::OK;
  }

  grpc::Status GetModelInfo(ServerContext*, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override {
    for (const auto& model : models()) {
      if (model.name() == request->model()) {
        *response = model;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(StatusCode::NOT_FOUND, "unknown model '" + request->model() + "'");
  }

  v1::ClassifyRequest last_classify() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_classify_;
  }
  v1::GenerateRequest last_generate() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_generate_;
  }
  int classify_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return classify_calls_;
  }

 private:
  static std::vector<v1::ModelInfo> models() {
    v1::ModelInfo vit;
    vit.set_name("t2t_vit_t_24");
    vit.set_kind(v1::MODEL_KIND_CLASSIFIER);
    vit.set_default_attention(v1::ATTENTION_MODE_EXACT);
    vit.add_allowed_attention(v1::ATTENTION_MODE_EXACT);
    vit.add_allowed_attention(v1::ATTENTION_MODE_KDEFORMER);
    vit.set_device("cpu");
    vit.set_ready(true);
    vit.set_image_size(224);
    vit.set_max_batch_size(32);
    auto* layer = vit.add_attention_plan();
    layer->set_group("t2t_layer1");
    layer->set_method("kdeformer");
    layer->set_bucket_size(32);
    v1::ModelInfo gan;
    gan.set_name("biggan-deep-128");
    gan.set_kind(v1::MODEL_KIND_GENERATOR);
    gan.set_ready(true);
    gan.set_image_size(128);
    gan.set_default_attention(v1::ATTENTION_MODE_WILDCAT);
    gan.add_allowed_attention(v1::ATTENTION_MODE_WILDCAT);
    gan.add_allowed_attention(v1::ATTENTION_MODE_HYPERATTENTION);
    auto* peer = gan.add_attention_plan();
    peer->set_group("self_attention");
    peer->set_method("wildcat");
    peer->set_settings("wildcat(r=96,bins=8,clamped)");
    auto* plan = gan.add_plans();
    plan->set_attention(v1::ATTENTION_MODE_HYPERATTENTION);
    plan->set_description("self_attention=hyperattention(b=64,s=128,r=7,min_seq_len=0,masked)");
    return {vit, gan};
  }

  static std::optional<grpc::Status> error_for(ServerContext* context, const std::string& model) {
    if (model == "missing") return grpc::Status(StatusCode::NOT_FOUND, "unknown model 'missing'");
    if (model == "busy") return grpc::Status(StatusCode::RESOURCE_EXHAUSTED, "queue full (64)");
    if (model == "bad") return grpc::Status(StatusCode::INVALID_ARGUMENT, "image 0: not an image");
    if (model == "broken") return grpc::Status(StatusCode::INTERNAL, "forward failed");
    if (model == "draining") return grpc::Status(StatusCode::UNAVAILABLE, "server is draining");
    if (model == "slow") {
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!context->IsCancelled() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return grpc::Status(StatusCode::DEADLINE_EXCEEDED, "deadline passed while queued");
    }
    return std::nullopt;
  }

  std::mutex mu_;
  v1::ClassifyRequest last_classify_;
  v1::GenerateRequest last_generate_;
  int classify_calls_ = 0;
};

class FakeServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    grpc::EnableDefaultHealthCheckService(true);
    service_ = new FakeInference();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    server_->GetHealthCheckService()->SetServingStatus("readiness", false);
  }
  static void TearDownTestSuite() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    delete server_;
    delete service_;
  }

  static std::string address() { return "127.0.0.1:" + std::to_string(port_); }
  static Client client(ClientOptions options = {}) { return Client(address(), options); }

  // Runs kdeserve-cli in-process; returns the exit code.
  static int cli(std::vector<std::string> words, std::string* out_text = nullptr,
                 std::string* err_text = nullptr) {
    words.insert(words.begin(), {"--address", address()});
    ParseResult parsed = parse_cli_args(words);
    EXPECT_TRUE(parsed.args) << parsed.error;
    if (!parsed.args) return kExitUsage;
    std::ostringstream out;
    std::ostringstream err;
    int code = run_cli(*parsed.args, out, err);
    if (out_text) *out_text = out.str();
    if (err_text) *err_text = err.str();
    return code;
  }

  static fs::path temp_dir(const std::string& name) {
    fs::path dir = fs::temp_directory_path() /
                   ("kdeserve_client_test_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
  }

  static inline FakeInference* service_ = nullptr;
  static inline grpc::Server* server_ = nullptr;
  static inline int port_ = 0;
};

TEST_F(FakeServerTest, ClassifyBuildsTheRequestAndReadsResults) {
  auto result = client().classify("t2t_vit_t_24", {"abc", std::string(300, '\0')}, 3,
                                  v1::ATTENTION_MODE_KDEFORMER);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  auto request = service_->last_classify();
  EXPECT_EQ(request.model(), "t2t_vit_t_24");
  EXPECT_EQ(request.top_k(), 3u);
  EXPECT_EQ(request.attention(), v1::ATTENTION_MODE_KDEFORMER);
  ASSERT_EQ(request.images_size(), 2);
  EXPECT_EQ(request.images(0).encoded(), "abc");
  EXPECT_EQ(request.images(1).encoded(), std::string(300, '\0'));
  ASSERT_EQ(result->results_size(), 2);
  EXPECT_EQ(result->results(0).top_k_size(), 3);
  EXPECT_EQ(result->results(0).top_k(0).index(), 3u);
  EXPECT_EQ(result->results(1).top_k(0).index(), 300u);
  EXPECT_EQ(result->results(1).top_k(0).label(), "label300");
  EXPECT_EQ(result->attention(), v1::ATTENTION_MODE_KDEFORMER);
  EXPECT_EQ(result->timing().batch_size(), 2u);
}

TEST_F(FakeServerTest, GenerateSendsItemsAndReturnsSeeds) {
  std::vector<v1::GenerateItem> items = {make_generate_item(207, 42, 0.5),
                                         make_generate_item(980)};
  auto result = client().generate("biggan-deep-128", items);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  auto request = service_->last_generate();
  EXPECT_EQ(request.format(), v1::IMAGE_FORMAT_PNG);
  ASSERT_EQ(request.items_size(), 2);
  EXPECT_EQ(request.items(0).class_id(), 207u);
  EXPECT_EQ(request.items(0).seed(), 42u);
  EXPECT_DOUBLE_EQ(request.items(0).truncation(), 0.5);
  EXPECT_EQ(request.items(1).class_id(), 980u);
  EXPECT_EQ(request.items(1).noise_case(), v1::GenerateItem::NOISE_NOT_SET);
  ASSERT_EQ(result->images_size(), 2);
  EXPECT_EQ(result->images(0).seed(), 42u);
  EXPECT_EQ(result->images(1).seed(), 9001u);
  EXPECT_DOUBLE_EQ(result->images(1).truncation(), 0.4);
  EXPECT_EQ(result->images(0).data().substr(0, 4), std::string("\x89PNG", 4));
}

TEST_F(FakeServerTest, ServerStatusCodesAndMessagesReachTheCaller) {
  const std::vector<std::pair<std::string, StatusCode>> cases = {
      {"missing", StatusCode::NOT_FOUND},
      {"busy", StatusCode::RESOURCE_EXHAUSTED},
      {"bad", StatusCode::INVALID_ARGUMENT},
      {"broken", StatusCode::INTERNAL},
      {"draining", StatusCode::UNAVAILABLE}};
  for (const auto& [model, code] : cases) {
    auto classify = client().classify(model, {"x"});
    ASSERT_FALSE(classify.ok()) << model;
    EXPECT_EQ(classify.status().code, code) << model;
    EXPECT_FALSE(classify.status().message.empty());
    auto generate = client().generate(model, {make_generate_item(1)});
    ASSERT_FALSE(generate.ok()) << model;
    EXPECT_EQ(generate.status().code, code) << model;
  }
  auto busy = client().classify("busy", {"x"});
  EXPECT_NE(busy.status().to_string().find("queue full (64)"), std::string::npos);
}

TEST_F(FakeServerTest, DeadlineCutsASlowCallShort) {
  ClientOptions options;
  options.deadline = std::chrono::milliseconds(200);
  auto start = std::chrono::steady_clock::now();
  auto result = client(options).classify("slow", {"x"});
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code, StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  std::string err;
  EXPECT_EQ(cli({"--deadline", "0.2", "classify", "--model", "slow", "/dev/null"}, nullptr, &err),
            exit_code_for(StatusCode::DEADLINE_EXCEEDED));
  EXPECT_NE(err.find("DEADLINE_EXCEEDED"), std::string::npos) << err;
}

TEST_F(FakeServerTest, ReceiveLimitDefaultsTo64MiB) {
  auto big = client().generate("huge", {make_generate_item(1)});
  ASSERT_TRUE(big.ok()) << big.status().to_string();
  EXPECT_EQ(big->images(0).data().size(), 5u << 20);
  ClientOptions small;
  small.max_receive_message_size = 1 << 20;
  auto rejected = client(small).generate("huge", {make_generate_item(1)});
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.status().code, StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(FakeServerTest, ListModelsAndModelInfo) {
  auto models = client().list_models();
  ASSERT_TRUE(models.ok()) << models.status().to_string();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name(), "t2t_vit_t_24");
  auto info = client().model_info("biggan-deep-128");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind(), v1::MODEL_KIND_GENERATOR);
  auto missing = client().model_info("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code, StatusCode::NOT_FOUND);
  EXPECT_EQ(missing.status().message, "unknown model 'nope'");
}

TEST_F(FakeServerTest, HealthLivenessReadinessAndUnknownService) {
  auto live = client().health();
  ASSERT_TRUE(live.ok()) << live.status().to_string();
  EXPECT_EQ(*live, grpc::health::v1::HealthCheckResponse::SERVING);
  auto ready = client().health("readiness");
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(*ready, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(cli({"health", "--service", "readiness"}), kExitNotServing);

  server_->GetHealthCheckService()->SetServingStatus("readiness", true);
  std::string out;
  EXPECT_EQ(cli({"health", "--service", "readiness"}, &out), kExitOk);
  EXPECT_EQ(out, "SERVING\n");
  server_->GetHealthCheckService()->SetServingStatus("readiness", false);

  auto unknown = client().health("no-such-service");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code, StatusCode::NOT_FOUND);
  EXPECT_EQ(cli({"health", "--service", "no-such-service"}),
            exit_code_for(StatusCode::NOT_FOUND));
}

TEST_F(FakeServerTest, UnreachableServerIsUnavailable) {
  ClientOptions options;
  options.deadline = std::chrono::seconds(5);
  Client nowhere("127.0.0.1:1", options);
  auto result = nowhere.health();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code, StatusCode::UNAVAILABLE);
  std::string err;
  ParseResult parsed = parse_cli_args({"--address", "127.0.0.1:1", "health"});
  ASSERT_TRUE(parsed.args);
  std::ostringstream out_stream;
  std::ostringstream err_stream;
  EXPECT_EQ(run_cli(*parsed.args, out_stream, err_stream), exit_code_for(StatusCode::UNAVAILABLE));
  EXPECT_NE(err_stream.str().find("UNAVAILABLE"), std::string::npos);
}

TEST_F(FakeServerTest, TlsOptionsUseTls) {
  ClientOptions options;
  options.deadline = std::chrono::seconds(5);
  options.tls_root_certs = "";  // gRPC's default roots; the plaintext fake fails the handshake
  auto result = Client(address(), options).health();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code, StatusCode::UNAVAILABLE);
  std::string err;
  EXPECT_EQ(cli({"--tls-ca", "/nonexistent/ca.pem", "health"}, nullptr, &err), kExitLocalError);
  EXPECT_NE(err.find("cannot read /nonexistent/ca.pem"), std::string::npos) << err;
}

TEST(NoInferenceService, CallsAreUnimplemented) {
  // A server hosting only the (unimplemented) generated Health base: Inference is unknown.
  grpc::health::v1::Health::Service health_only;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&health_only);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  Client client("127.0.0.1:" + std::to_string(port));
  auto result = client.list_models();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code, StatusCode::UNIMPLEMENTED);
  auto health = client.health();
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code, StatusCode::UNIMPLEMENTED);
  server->Shutdown();
}

TEST_F(FakeServerTest, CliClassifiesADirectoryInBatches) {
  fs::path dir = temp_dir("classify");
  for (int i = 0; i < 5; ++i) {
    std::ofstream(dir / ("img" + std::to_string(i) + ".jpg"), std::ios::binary)
        << std::string(10 + i, 'x');
  }
  std::ofstream(dir / "notes.txt") << "not an image";
  const int calls_before = service_->classify_calls();
  std::string out;
  std::string err;
  // No --model: the CLI picks the first classifier the server lists.
  ASSERT_EQ(cli({"classify", "--batch", "2", "--top-k", "2", dir.string()}, &out, &err), kExitOk)
      << err;
  EXPECT_EQ(service_->classify_calls() - calls_before, 3);  // 2 + 2 + 1 images
  EXPECT_EQ(service_->last_classify().model(), "t2t_vit_t_24");
  EXPECT_NE(err.find("[5/5]"), std::string::npos) << err;
  EXPECT_NE(out.find((dir / "img4.jpg").string() + "\n  1. 0.5000  14  n00000000  label14\n"
                     "  2. 0.2500  15  n00000001  label15\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("notes.txt"), std::string::npos);
  EXPECT_EQ(cli({"classify", "--model", "missing", dir.string()}),
            exit_code_for(StatusCode::NOT_FOUND));
  EXPECT_EQ(cli({"classify", (dir / "absent.jpg").string()}), kExitLocalError);
  fs::remove_all(dir);
}

TEST_F(FakeServerTest, CliGenerateWritesPngFilesAndPrintsSeeds) {
  fs::path dir = temp_dir("generate") / "out";
  std::string out;
  std::string err;
  ASSERT_EQ(cli({"generate", "--model", "biggan-deep-128", "--classes", "207,980", "--count", "2",
                 "--seed", "10", "--out", dir.string()},
                &out, &err),
            kExitOk)
      << err;
  auto request = service_->last_generate();
  ASSERT_EQ(request.items_size(), 4);
  EXPECT_EQ(request.items(2).class_id(), 980u);
  EXPECT_EQ(request.items(2).seed(), 12u);
  EXPECT_NE(out.find("seeds: 10,11,12,13"), std::string::npos) << out;
  fs::path file = dir / "biggan-deep-128_class980_seed13.png";
  ASSERT_TRUE(fs::exists(file)) << out;
  EXPECT_EQ(fs::file_size(file), 16u);
  EXPECT_EQ(cli({"generate", "--model", "busy", "--classes", "1", "--out", dir.string()}),
            exit_code_for(StatusCode::RESOURCE_EXHAUSTED));
  fs::remove_all(dir.parent_path());
}

TEST_F(FakeServerTest, CliModels) {
  std::string out;
  ASSERT_EQ(cli({"models"}, &out), kExitOk);
  EXPECT_NE(out.find("t2t_vit_t_24"), std::string::npos);
  EXPECT_NE(out.find("exact; exact,kdeformer"), std::string::npos) << out;
  ASSERT_EQ(cli({"models", "t2t_vit_t_24"}, &out), kExitOk);
  EXPECT_NE(out.find("t2t_layer1: kdeformer (bucket 32"), std::string::npos) << out;
  ASSERT_EQ(cli({"models", "biggan-deep-128"}, &out), kExitOk);
  EXPECT_NE(out.find("default attention: wildcat\nallowed attention: wildcat hyperattention\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("self_attention: wildcat(r=96,bins=8,clamped)\n"), std::string::npos) << out;
  EXPECT_NE(out.find("plans of the allowed modes:\n  hyperattention: "
                     "self_attention=hyperattention(b=64,s=128,r=7,min_seq_len=0,masked)\n"),
            std::string::npos)
      << out;
  ASSERT_EQ(cli({"models"}, &out), kExitOk);
  EXPECT_NE(out.find("wildcat; wildcat,hyperattention"), std::string::npos) << out;
  EXPECT_EQ(cli({"models", "nope"}), exit_code_for(StatusCode::NOT_FOUND));
}

}  // namespace
}  // namespace kdeserve::client
