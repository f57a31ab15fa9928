// Metric names and exposition: the text passes `promtool check metrics`.
#include "server/metrics.h"

#include <google/protobuf/stubs/logging.h>
#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "server/errors.h"
#include "server/logging.h"
#include "server/thread_stacks.h"

namespace ks = kdeserve::server;

namespace {

std::string render(const ks::Metrics& m) {
  return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

ks::Metrics& filled() {
  static ks::Metrics m("0.1.0", "1.13.1");
  static bool once = [] {
    m.request_done("t2t_vit_t_24", "Classify", "OK", "kdeformer", 0.2);
    m.request_done("t2t_vit_t_24", "Classify", "INVALID_ARGUMENT", "exact", 0.001);
    m.queued("t2t_vit_t_24", 0.004);
    m.batch_done("t2t_vit_t_24", "kdeformer", 3, 0.19);
    m.rejected("t2t_vit_t_24", "queue_full");
    m.set_queue_depth("t2t_vit_t_24", 2, 1024);
    m.set_queue_capacity("t2t_vit_t_24", 64, 1 << 20);
    m.declare_model("biggan-deep-128", "Generate", {"OK", "INTERNAL"});
    m.set_model_ready("t2t_vit_t_24", true);
    m.set_load_seconds("t2t_vit_t_24", 1.5, 2.5);
    m.add_inflight(1);
    m.add_inflight(-1);
    return true;
  }();
  (void)once;
  return m;
}

}  // namespace

TEST(ServerMetrics, NamesLabelsAndBuckets) {
  const std::string text = render(filled());
  for (const char* needle :
       {"kdeserve_requests_total{code=\"OK\",model=\"t2t_vit_t_24\",rpc=\"Classify\"} 1",
        "kdeserve_request_duration_seconds_bucket{attention=\"kdeformer\",model=\"t2t_vit_t_24\"",
        "kdeserve_queue_duration_seconds_count{model=\"t2t_vit_t_24\"} 1",
        "kdeserve_compute_duration_seconds_sum{attention=\"kdeformer\",model=\"t2t_vit_t_24\"}",
        "kdeserve_batch_size_bucket{model=\"t2t_vit_t_24\",le=\"4\"} 1",
        "kdeserve_batch_size_bucket{model=\"t2t_vit_t_24\",le=\"64\"} 1",
        "kdeserve_queue_depth{model=\"t2t_vit_t_24\"} 2",
        "kdeserve_queue_capacity{model=\"t2t_vit_t_24\"} 64", "kdeserve_inflight_requests 0",
        "kdeserve_requests_total{code=\"INTERNAL\",model=\"biggan-deep-128\",rpc=\"Generate\"} 0",
        "kdeserve_rejected_total{model=\"biggan-deep-128\",reason=\"deadline\"} 0",
        "kdeserve_rejected_total{model=\"t2t_vit_t_24\",reason=\"queue_full\"} 1",
        "kdeserve_model_ready{model=\"t2t_vit_t_24\"} 1",
        "kdeserve_build_info{torch_version=\"1.13.1\",version=\"0.1.0\"} 1",
        "kdeserve_items_total{model=\"t2t_vit_t_24\"} 3"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
}

TEST(ServerMetrics, ExpositionPassesPromtool) {
#ifndef KDESERVE_PROMTOOL
  GTEST_SKIP() << "promtool not found at configure time";
#else
  const std::string text = render(filled());
  FILE* p = popen(KDESERVE_PROMTOOL " check metrics 2>&1", "w");
  ASSERT_NE(p, nullptr);
  fwrite(text.data(), 1, text.size(), p);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << "promtool check metrics failed on:\n" << text;
#endif
}

TEST(ServerMetrics, BindFailureIsAClearError) {
  ks::Metrics a("0", "0"), b("0", "0"), c("0", "0");
  a.expose("127.0.0.1:0");  // any free port
  EXPECT_THROW(b.expose("256.0.0.1:99999"), ks::MetricsBindError);
  ks::MetricsConfig http;
  http.http_threads = 3;
  http.request_timeout_ms = 250;
  c.expose("127.0.0.1:0", http);  // civetweb takes the options (it throws on a bad one)
}

TEST(ServerLogging, AccessLineFormats) {
  ks::AccessRecord r{"abc", "Classify", "t2t_vit_t_24", 2, "exact", "OK", 0.25, "ipv4:1", ""};
  EXPECT_EQ(ks::format_access(r, false),
            "access request_id=abc rpc=Classify model=t2t_vit_t_24 items=2 attention=exact "
            "code=OK latency_s=0.2500 peer=ipv4:1");
  const std::string json = ks::format_access(r, true);
  EXPECT_NE(json.find("\"request_id\":\"abc\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"code\":\"OK\""), std::string::npos) << json;
}

TEST(ServerLogging, JsonLinesCarryTheAccessFields) {
  ks::setup_logging("info", "json");
  testing::internal::CaptureStderr();
  spdlog::info("plain \"quoted\" message");
  ks::log_access({"id1", "Generate", "biggan-deep-128", 3, "kdeformer", "OK", 1.5, "p", ""});
  spdlog::default_logger()->flush();
  const std::string out = testing::internal::GetCapturedStderr();
  ks::setup_logging("info", "text");
  const auto nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos) << out;
  const auto first = nlohmann::json::parse(out.substr(0, nl));
  EXPECT_EQ(first["msg"], "plain \"quoted\" message");
  EXPECT_EQ(first["level"], "info");
  const auto second = nlohmann::json::parse(out.substr(nl + 1, out.find('\n', nl + 1) - nl - 1));
  EXPECT_EQ(second["msg"], "access");
  EXPECT_EQ(second["rpc"], "Generate");
  EXPECT_EQ(second["items"], 3);
  EXPECT_EQ(second["code"], "OK");
  EXPECT_THROW(ks::setup_logging("loud", "text"), std::invalid_argument);
  EXPECT_THROW(ks::setup_logging("info", "xml"), std::invalid_argument);
}

// Fields a client can fill (request id, the status message and its echo, odd peers) keep an
// access line one bounded line, and valid JSON in the json format.
TEST(ServerLogging, AccessFieldsAreBoundedAndEscaped) {
  const std::string odd = "id with space\n\"q\"\\ \x01\xff";
  const std::string message = "unknown model " + std::string(1 << 20, 'm') + "\n\xc3(\x1b[2J";
  ks::AccessRecord r{odd, "GetModelInfo", "", 0, "", "NOT_FOUND", 0.001, std::string(300, 'p'),
                     message};
  const std::string text = ks::format_access(r, false);
  EXPECT_EQ(text.find('\n'), std::string::npos) << text.substr(0, 300);
  EXPECT_LE(text.size(), ks::kMaxStatusMessageBytes + 512) << text.size();
  for (char c : text) ASSERT_TRUE(c >= 32 && c < 127) << text.substr(0, 300);
  EXPECT_NE(text.find("request_id='id with space\\n\"q\"\\\\ \\x01\\xff' rpc=GetModelInfo"),
            std::string::npos)
      << text.substr(0, 300);
  EXPECT_NE(text.find(" model=- "), std::string::npos);
  EXPECT_NE(text.find(" peer='ppp"), std::string::npos);
  const auto json = nlohmann::json::parse(ks::format_access(r, true));
  EXPECT_LE(json["error"].get<std::string>().size(), ks::kMaxStatusMessageBytes);
  EXPECT_LE(json["peer"].get<std::string>().size(), ks::kMaxEchoBytes);
  EXPECT_EQ(json["request_id"], "id with space\n\"q\"\\ \\x01\\xff");
  // A message that is not UTF-8 once threw in the text format (and the line was lost).
  r.message = "bad \xff byte";
  EXPECT_NE(ks::format_access(r, false).find("error=\"bad \\\\xff byte\""), std::string::npos)
      << ks::format_access(r, false);
}

// libprotobuf's and gRPC's own lines go through the logger: a json log stays JSON lines.
TEST(ServerLogging, LibraryLinesKeepTheJsonFormat) {
  ks::setup_logging("info", "json");
  testing::internal::CaptureStderr();
  GOOGLE_LOG(ERROR) << "String field 'm' contains invalid UTF-8 data \xff";
  grpc_init();  // gRPC prints nothing before
  gpr_log(GPR_ERROR, "a gRPC line with \"quotes\"\nand a newline");
  grpc_shutdown();
  spdlog::default_logger()->flush();
  const std::string out = testing::internal::GetCapturedStderr();
  ks::setup_logging("info", "text");
  std::size_t lines = 0;
  for (std::size_t at = 0, nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1) {
    const auto line = nlohmann::json::parse(out.substr(at, nl - at), nullptr, false);
    ASSERT_FALSE(line.is_discarded()) << out;
    EXPECT_EQ(line["level"], "error");
    ++lines;
  }
  EXPECT_EQ(lines, 2u) << out;
  EXPECT_NE(out.find("libprotobuf "), std::string::npos) << out;
  EXPECT_NE(out.find("grpc "), std::string::npos) << out;
}

// civetweb's threads (the metrics Exposer) ask for 100 KiB stacks; the static TLS of the loaded
// libraries (~190 KiB in the CUDA build) must come on top (server/thread_stacks.cpp).
TEST(ThreadStacks, RequestedStackSizeGetsTheStaticTlsOnTop) {
  EXPECT_GT(kdeserve::server::static_tls_bytes(), 0u);
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 102400), 0);
  std::size_t size = 0;
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &size), 0);
  EXPECT_EQ(size, 102400 + kdeserve::server::static_tls_bytes());
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, &attr, [](void*) -> void* { return nullptr; }, nullptr), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}
