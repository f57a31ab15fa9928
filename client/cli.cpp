// kdeserve-cli: classify, generate, models and health against a kdeserve server.
#include <iostream>
#include <string>
#include <vector>

#include "client/cli_args.h"
#include "client/cli_commands.h"

int main(int argc, char** argv) {
  using namespace kdeserve::client;
  std::vector<std::string> words(argv + 1, argv + argc);
  ParseResult parsed = parse_cli_args(words);
  if (!parsed.args) {
    std::cerr << "kdeserve-cli: " << parsed.error << "\n\n" << cli_usage();
    return kExitUsage;
  }
  return run_cli(*parsed.args, std::cout, std::cerr);
}
