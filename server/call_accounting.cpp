#include "server/call_accounting.h"

#include <grpcpp/server_context.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <string>

#include "server/logging.h"
#include "server/status.h"

namespace kdeserve::server {

namespace {

// The services whose calls are accounted: kdeserve.v1 and the Open Inference Protocol.
constexpr const char* kServicePrefixes[] = {"/kdeserve.v1.Inference/",
                                            "/inference.GRPCInferenceService/"};
// Not in the OIP service (server/oip_service.h): gRPC's own UNIMPLEMENTED, kept as it is.
constexpr const char* kUndeclaredStream = "/inference.GRPCInferenceService/ModelStreamInfer";

class UnhandledCallCounter final : public grpc::experimental::Interceptor {
 public:
  UnhandledCallCounter(grpc::experimental::ServerRpcInfo* info, Metrics& metrics, LiveCalls& live,
                       std::string rpc)
      : info_(info), metrics_(metrics), live_(live), rpc_(std::move(rpc)) {
    live_.add();
  }

  ~UnhandledCallCounter() override {
    account();
    live_.remove();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    record(methods);
    methods->Proceed();
  }

 private:
  void account() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (handled_ || !closed_) return;  // the handler's job counted it
    try {
      // gRPC's own answers: an unparseable message gets the status sent below; a call without a
      // message ended by its deadline, by the message-size limit or by the client.
      const grpc::StatusCode code = cancelled_ ? cancelled_code_ : sent_code_;
      const std::string name = code_name(code);
      const double latency =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_.request_done("unknown", rpc_, name, "", latency);
      if (code == grpc::StatusCode::INVALID_ARGUMENT) metrics_.rejected("unknown", "invalid");
      log_access({"", rpc_, "", 0, "", name, latency, peer_,
                  !received_ ? "no request message (deadline or cancellation)"
                             : "the request is not a valid protobuf message"});
    } catch (...) {
    }
  }

  // gRPC runs the hooks of one call on different threads and orders them inside its
  // uninstrumented code: the mutex makes that order visible (ThreadSanitizer).
  void record(grpc::experimental::InterceptorBatchMethods* methods) {
    using grpc::experimental::InterceptionHookPoints;
    std::lock_guard<std::mutex> lock(mutex_);
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      peer_ = info_->server_context()->peer();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // Non-null: the message parsed and the handler runs (and counts the call).
      handled_ = methods->GetRecvMessage() != nullptr;
      received_ = true;
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) && !handled_) {
      grpc::Status status = methods->GetSendStatus();
      if (received_ && status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
        status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "the request is not a valid " + rpc_ + "Request protobuf message");
        methods->ModifySendStatus(status);
      }
      sent_code_ = status.error_code();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      closed_ = true;
      cancelled_ = info_->server_context()->IsCancelled();
      if (cancelled_) cancelled_code_ = cancelled_call_code(info_->server_context()->deadline());
    }
  }

  std::mutex mutex_;
  grpc::experimental::ServerRpcInfo* info_;
  Metrics& metrics_;
  LiveCalls& live_;
  const std::string rpc_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::string peer_;
  bool handled_ = false, received_ = false, closed_ = false, cancelled_ = false;
  grpc::StatusCode sent_code_ = grpc::StatusCode::UNKNOWN;
  grpc::StatusCode cancelled_code_ = grpc::StatusCode::CANCELLED;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  Factory(Metrics& metrics, LiveCalls& live) : metrics_(metrics), live_(live) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    if (method == nullptr || std::strcmp(method, kUndeclaredStream) == 0) return nullptr;
    for (const char* prefix : kServicePrefixes) {
      if (std::strncmp(method, prefix, std::strlen(prefix)) == 0) {
        return new UnhandledCallCounter(info, metrics_, live_, method + std::strlen(prefix));
      }
    }
    return nullptr;  // health, reflection: not inference calls
  }

 private:
  Metrics& metrics_;
  LiveCalls& live_;
};

}  // namespace

grpc::StatusCode cancelled_call_code(std::chrono::system_clock::time_point deadline) {
  // A client whose deadline passes cancels the call itself (RST_STREAM), and that can reach
  // the server shortly before the server's copy of the deadline (taken when the headers
  // arrived) has passed too.
  constexpr auto kDeadlineSlack = std::chrono::milliseconds(100);
  return std::chrono::system_clock::now() + kDeadlineSlack >= deadline
             ? grpc::StatusCode::DEADLINE_EXCEEDED
             : grpc::StatusCode::CANCELLED;
}

void LiveCalls::add() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++count_;
}

void LiveCalls::remove() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (--count_ == 0) none_.notify_all();
}

bool LiveCalls::wait_until_none(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return none_.wait_until(lock, deadline, [&] { return count_ == 0; });
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> make_call_accounting(
    Metrics& metrics, LiveCalls& live) {
  return std::make_unique<Factory>(metrics, live);
}

}  // namespace kdeserve::server
