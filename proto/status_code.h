#pragma once
// gRPC status-code names shared by the server (metric labels, access log) and the client.

#include <grpcpp/support/status.h>

#include <string>

namespace kdeserve {

/// "OK", "INVALID_ARGUMENT", ... as gRPC spells them; "CODE_<n>" for codes it does not name.
std::string status_code_name(grpc::StatusCode code);

}  // namespace kdeserve
