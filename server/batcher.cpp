#include "server/batcher.h"

namespace kdeserve::server {

const char* to_string(SubmitResult result) {
  switch (result) {
    case SubmitResult::kAccepted: return "accepted";
    case SubmitResult::kQueueFull: return "queue_full";
    case SubmitResult::kQueueBytesFull: return "queue_bytes_full";
    case SubmitResult::kShutdown: return "shutdown";
  }
  return "unknown";
}

const char* to_string(DropReason reason) {
  switch (reason) {
    case DropReason::kDeadline: return "deadline";
    case DropReason::kCancelled: return "cancelled";
    case DropReason::kShutdown: return "shutdown";
  }
  return "unknown";
}

}  // namespace kdeserve::server
