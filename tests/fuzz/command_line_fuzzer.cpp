// Fuzzes the server's command line (server/config.h): the input's lines are the arguments of
// parse_command_line(); the overrides are applied to the built-in configuration and validated,
// as load_config() does (a --config file is not read: the file system is not the input). Any
// command line may be refused with a ConfigError; nothing may crash, leak, hit undefined behaviour
// or throw anything else, and a configuration that validates must survive --print-config.
#include <cstdint>
#include <string>
#include <vector>

#include "server/config.h"
#include "tests/fuzz/config_fuzz.h"
#include "tests/fuzz/fuzz_support.h"

namespace ks = kdeserve::server;

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  return {
      {"help", "--help"},
      {"print", "--print-config\n--listen=127.0.0.1:9000\n--threads\n3"},
      {"all",
       "--listen\n[::]:8500\n--metrics-listen=0.0.0.0:8502\n--threads=0\n"
       "--log-level\nwarn\n--log-format=json\n--model-weights\nt2t_vit_t_14=/etc/hostname"},
      {"config", "--config\n/nonexistent.yaml\n--log-level=debug"},
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = {"kdeserve-server"};
  std::string arg;
  for (size_t i = 0; i <= size; ++i) {
    if (i == size || data[i] == '\n') {
      args.push_back(arg);
      arg.clear();
    } else {
      arg += static_cast<char>(data[i]);
    }
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  ks::ServerConfig config;
  try {
    const ks::CommandLine cl = ks::parse_command_line(static_cast<int>(args.size()), argv.data());
    config = ks::parse_config_yaml(ks::embedded_default_config(), "<built-in server.yaml>");
    ks::apply_overrides(config, cl);
    ks::validate(config);
  } catch (const ks::ConfigError&) {
    return 0;
  }
  kdeserve::fuzz::check_round_trip(config);
  return 0;
}
