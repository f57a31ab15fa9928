#pragma once
/// A gRPC MessageAllocator whose requests can be freed before the call ends
/// (CallbackServerContext::GetRpcAllocatorState()->FreeRequest()). gRPC's default holder keeps
/// the request in the call arena until the call is done, so a queued Classify would pin its
/// whole message (encoded images, padding, unknown fields: up to max_message_bytes) while it
/// waits; with this one the service frees it once it kept what the model needs.

#include <grpcpp/support/message_allocator.h>

namespace kdeserve::server {

template <typename Request, typename Response>
class FreeableMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  grpc::MessageHolder<Request, Response>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() {
      this->set_request(new Request());
      this->set_response(&response_);
    }
    ~Holder() override { FreeRequest(); }
    // The request is not touched after this (the service frees it only after validation and
    // decoding, and gRPC reads it only before the handler runs).
    void FreeRequest() override {
      delete this->request();
      this->set_request(nullptr);
    }
    void Release() override { delete this; }

   private:
    Response response_;
  };
};

}  // namespace kdeserve::server
