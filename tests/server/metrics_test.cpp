// Metric names and exposition: the text passes `promtool check metrics`.
#include "server/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

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
    m.set_queue_depth("t2t_vit_t_24", 2);
    m.set_queue_capacity("t2t_vit_t_24", 64);
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
