// Fuzzes the server's YAML configuration (server/config.h): parse_config_yaml() then validate().
// Any text may be refused with a ConfigError; nothing may crash, leak, hit undefined behaviour or
// throw anything else, and a configuration that validates must survive --print-config
// (check_round_trip).
#include <cstdint>
#include <string>
#include <vector>

#include "server/config.h"
#include "tests/fuzz/config_fuzz.h"
#include "tests/fuzz/fuzz_support.h"

namespace ks = kdeserve::server;

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  // deploy/config/*.yaml come as the CORPUS; these add the keys those leave out.
  return {
      {"embedded.yaml", ks::embedded_default_config()},
      {"everything.yaml", R"(server:
  listen: 127.0.0.1:8500
  metrics_listen: "[::1]:8502"
  threads: 2
  max_message_bytes: 1048576
  drain_delay_seconds: 0.5
  shutdown_grace_seconds: 3
  tls: {cert_file: /etc/hostname, key_file: /etc/hostname}
logging: {level: debug, format: json}
models:
  - name: t2t_vit_t_14
    weights: /etc/hostname
    init_seed: 7
    device: cpu
    default_attention: exact
    allowed_attention: [exact]
    batching: {max_batch_size: 4, max_queue_delay_ms: 2, max_queue_length: 8, max_items_per_request: 2}
    max_image_pixels: 1000
  - name: biggan-deep-128
    device: cuda:0
)"},
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ks::ServerConfig config;
  try {
    config = ks::parse_config_yaml(text, "<fuzz>");
    ks::validate(config);
  } catch (const ks::ConfigError&) {
    return 0;
  }
  kdeserve::fuzz::check_round_trip(config);
  return 0;
}
