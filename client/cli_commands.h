// kdeserve-cli's commands, runnable in-process (tests call run_cli against a fake server).
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "client/cli_args.h"

namespace kdeserve::client {

/// Runs one parsed command. Results go to out, progress and errors to err. Returns the exit
/// code (see cli_args.h).
int run_cli(const CliArgs& args, std::ostream& out, std::ostream& err);

/// Expands FILE|DIR arguments: a file stays as given, a directory contributes its image files
/// (.jpg .jpeg .png .bmp .webp, any case), sorted by name, not recursively. Throws
/// std::runtime_error for a path that does not exist.
std::vector<std::string> expand_image_paths(const std::vector<std::string>& paths);

}  // namespace kdeserve::client
