#pragma once
/// The property both config fuzz targets check on a configuration that validate() accepted.

#include <string>

#include "server/config.h"
#include "tests/fuzz/fuzz_support.h"

namespace kdeserve::fuzz {

/// What --print-config prints for a valid configuration must parse back (parse_config_yaml) to
/// a configuration that validates and prints the same text again.
inline void check_round_trip(const server::ServerConfig& config) {
  const std::string printed = server::to_yaml(config);
  std::string again;
  try {
    const server::ServerConfig reparsed = server::parse_config_yaml(printed, "<to_yaml>");
    server::validate(reparsed);
    again = server::to_yaml(reparsed);
  } catch (const server::ConfigError& e) {
    KDESERVE_FUZZ_CHECK(
        false, std::string("the printed configuration is refused: ") + e.what() + "\n" + printed);
  }
  KDESERVE_FUZZ_CHECK(again == printed, "the printed configuration reads back differently:\n" +
                                            printed + "\n---\n" + again);
}

}  // namespace kdeserve::fuzz
