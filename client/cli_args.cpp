#include "client/cli_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>

#include "client/client.h"

namespace kdeserve::client {

namespace {

struct ParseError {
  std::string message;
};

uint64_t parse_unsigned(const std::string& name, const std::string& text, uint64_t max) {
  if (text.empty() || text[0] == '-' || text[0] == '+') {
    throw ParseError{name + " needs a non-negative integer, got '" + text + "'"};
  }
  errno = 0;
  char* end = nullptr;
  unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0' || value > max) {
    throw ParseError{name + " needs an integer in [0, " + std::to_string(max) + "], got '" +
                     text + "'"};
  }
  return value;
}

double parse_double(const std::string& name, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(value)) {
    throw ParseError{name + " needs a number, got '" + text + "'"};
  }
  return value;
}

std::vector<uint32_t> parse_classes(const std::string& text) {
  std::vector<uint32_t> classes;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ',')) {
    if (part.empty()) throw ParseError{"--classes has an empty entry in '" + text + "'"};
    classes.push_back(static_cast<uint32_t>(parse_unsigned("--classes", part, 999)));
  }
  if (classes.empty()) throw ParseError{"--classes needs at least one class id (0..999)"};
  return classes;
}

// Which options each command accepts (globals are accepted everywhere).
const std::map<std::string, std::vector<Command>>& option_commands() {
  static const std::map<std::string, std::vector<Command>> table = {
      {"--model", {Command::kClassify, Command::kGenerate, Command::kModels}},
      {"--attention", {Command::kClassify, Command::kGenerate}},
      {"--top-k", {Command::kClassify}},
      {"--batch", {Command::kClassify}},
      {"--classes", {Command::kGenerate}},
      {"--count", {Command::kGenerate}},
      {"--seed", {Command::kGenerate}},
      {"--truncation", {Command::kGenerate}},
      {"--out", {Command::kGenerate}},
      {"--service", {Command::kHealth}},
  };
  return table;
}

bool is_global(const std::string& name) {
  return name == "--address" || name == "--deadline" || name == "--max-receive-mib" ||
         name == "--tls-ca";
}

void apply(CliArgs& args, const std::string& name, const std::string& value) {
  if (name == "--address") {
    if (value.empty()) throw ParseError{"--address needs HOST:PORT"};
    args.address = value;
  } else if (name == "--deadline") {
    args.deadline_seconds = parse_double(name, value);
    if (args.deadline_seconds < 0) throw ParseError{"--deadline must be >= 0 (0: no deadline)"};
  } else if (name == "--max-receive-mib") {
    args.max_receive_mib = static_cast<int>(parse_unsigned(name, value, 2047));
    if (args.max_receive_mib == 0) throw ParseError{"--max-receive-mib must be >= 1"};
  } else if (name == "--tls-ca") {
    args.tls = true;
    args.tls_ca_file = value;
  } else if (name == "--model") {
    args.model = value;
  } else if (name == "--attention") {
    auto mode = parse_attention_mode(value);
    if (!mode) {
      std::string names;
      for (const std::string& n : attention_mode_names()) names += n + ", ";
      throw ParseError{"--attention must be " + names + "or default, got '" + value + "'"};
    }
    args.attention = *mode;
  } else if (name == "--top-k") {
    args.top_k = static_cast<uint32_t>(parse_unsigned(name, value, 1000));
  } else if (name == "--batch") {
    args.batch = static_cast<uint32_t>(parse_unsigned(name, value, 4096));
    if (args.batch == 0) throw ParseError{"--batch must be >= 1"};
  } else if (name == "--classes") {
    args.classes = parse_classes(value);
  } else if (name == "--count") {
    args.count = static_cast<uint32_t>(parse_unsigned(name, value, 10000));
    if (args.count == 0) throw ParseError{"--count must be >= 1"};
  } else if (name == "--seed") {
    args.seed = parse_unsigned(name, value, std::numeric_limits<uint64_t>::max());
  } else if (name == "--truncation") {
    args.truncation = parse_double(name, value);
    if (args.truncation < 0 || args.truncation > 1) {
      throw ParseError{"--truncation must be in (0, 1] (0: server default 0.4)"};
    }
  } else if (name == "--out") {
    if (value.empty()) throw ParseError{"--out needs a directory"};
    args.out_dir = value;
  } else if (name == "--service") {
    args.service = value;
  }
}

Command parse_command(const std::string& word) {
  if (word == "classify") return Command::kClassify;
  if (word == "generate") return Command::kGenerate;
  if (word == "models") return Command::kModels;
  if (word == "health") return Command::kHealth;
  if (word == "help") return Command::kHelp;
  throw ParseError{"unknown command '" + word + "' (classify, generate, models, health)"};
}

}  // namespace

ParseResult parse_cli_args(const std::vector<std::string>& argv) {
  try {
    CliArgs args;
    std::optional<Command> command;
    std::vector<std::pair<std::string, std::string>> options;
    std::vector<std::string> positional;
    bool only_positional = false;
    for (size_t i = 0; i < argv.size(); ++i) {
      const std::string& word = argv[i];
      if (!only_positional && word == "--") {
        only_positional = true;
      } else if (!only_positional && (word == "-h" || word == "--help")) {
        return ParseResult{CliArgs{}, ""};
      } else if (!only_positional && word.rfind("--", 0) == 0) {
        std::string name = word;
        std::string value;
        auto eq = word.find('=');
        if (eq != std::string::npos) {
          name = word.substr(0, eq);
          value = word.substr(eq + 1);
        } else {
          if (!is_global(name) && option_commands().count(name) == 0) {
            throw ParseError{"unknown option " + name};
          }
          if (i + 1 >= argv.size()) throw ParseError{name + " needs a value"};
          value = argv[++i];
        }
        options.emplace_back(name, value);
      } else if (!command) {
        command = parse_command(word);
      } else {
        positional.push_back(word);
      }
    }
    if (!command) throw ParseError{"no command given (classify, generate, models, health)"};
    args.command = *command;
    for (const auto& [name, value] : options) {
      if (!is_global(name)) {
        auto it = option_commands().find(name);
        if (it == option_commands().end()) throw ParseError{"unknown option " + name};
        bool allowed = false;
        for (Command c : it->second) allowed = allowed || c == args.command;
        if (!allowed) throw ParseError{name + " does not apply to this command"};
      }
      apply(args, name, value);
    }
    switch (args.command) {
      case Command::kClassify:
        if (positional.empty()) throw ParseError{"classify needs at least one FILE or DIR"};
        args.paths = positional;
        break;
      case Command::kGenerate:
        if (!positional.empty()) throw ParseError{"generate takes no positional arguments"};
        if (args.classes.empty()) throw ParseError{"generate needs --classes ID[,ID...]"};
        break;
      case Command::kModels:
        if (positional.size() > 1) throw ParseError{"models takes at most one model name"};
        if (positional.size() == 1) {
          if (!args.model.empty()) throw ParseError{"give the model name once"};
          args.model = positional[0];
        }
        break;
      case Command::kHealth:
        if (!positional.empty()) throw ParseError{"health takes no positional arguments"};
        break;
      case Command::kHelp:
        break;
    }
    return ParseResult{args, ""};
  } catch (const ParseError& e) {
    return ParseResult{std::nullopt, e.message};
  }
}

std::string cli_usage() {
  return R"(usage: kdeserve-cli [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]

Commands:
  classify [--model M] [--top-k K] [--batch B] [--attention MODE] FILE|DIR...
      Classify image files (JPEG/PNG/BMP/WebP; a DIR means its image files). Sends up to B
      images per request (default 8); prints the top-k classes per image (default 5).
  generate [--model M] --classes 207,980 [--count N] [--seed S] [--truncation T]
           [--out DIR] [--attention MODE]
      Generate N images per class (default 1) and write them as PNG files into DIR (default .).
      Item i uses seed S+i; without --seed the server draws seeds. Prints the seeds used.
      MODE: exact, kdeformer, performer, reformer, scatterbrain, hyperattention, wildcat,
      thinformer or default (the model's); it must be allowed by the server's config.
  models [NAME]
      List the hosted models, or describe one.
  health [--service NAME]
      grpc.health.v1 check ("" liveness, "readiness" once models are warm). Exits 0 only when
      SERVING, so it works as a Docker HEALTHCHECK.
  Without --model, classify/generate use the first hosted model of the right kind.

Global options:
  --address HOST:PORT     server address (default localhost:8500)
  --deadline SECONDS      per-call deadline (default 60; 0 = none)
  --max-receive-mib N     largest response accepted (default 64)
  --tls-ca FILE           use TLS with these PEM root certificates

Exit codes: 0 ok, 1 not SERVING, 2 usage, 3 local file error, 10+gRPC code on a failed call
  (11 CANCELLED, 13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND,
   18 RESOURCE_EXHAUSTED, 22 UNIMPLEMENTED, 23 INTERNAL, 24 UNAVAILABLE).
)";
}

int exit_code_for(grpc::StatusCode code) {
  if (code == grpc::StatusCode::OK) return kExitOk;
  return kExitRpcBase + static_cast<int>(code);
}

}  // namespace kdeserve::client
