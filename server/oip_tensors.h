#pragma once
/// The Open Inference Protocol's tensors (proto/inference/grpc_service.proto) as this server's
/// models take them: checking and reading a ModelInferRequest's inputs and requested outputs,
/// and encoding the outputs. Torch-free and gRPC-free (protobuf messages only), like
/// server/request_validation.h. Every failure throws RequestError(kInvalidArgument) whose
/// message names the tensor (or the parameter) and what is wrong with it, before anything
/// reaches a model. The tensor contract per model kind is in deploy/README.md ("Open
/// Inference Protocol").

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "inference/grpc_service.pb.h"
#include "kdeserve/v1/inference.pb.h"
#include "server/engine/engine.h"
#include "server/config.h"

namespace kdeserve::server::oip {

/// The one model version this server hosts (an empty request version means it too).
inline constexpr const char* kModelVersion = "1";

/// Bytes per element of an OIP datatype; 0 for BYTES (variable); nullopt for an unknown name.
std::optional<int64_t> datatype_size(const std::string& datatype);

/// An input or output of a model, as ModelMetadata lists it (-1: a variable dimension).
struct TensorSpec {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
  /// The model's inputs: at most one of each `group` (classifier: the image source; generator:
  /// the class, the noise), and a required group needs one.
  std::string group;
  bool required = false;
};

/// The inputs a model kind accepts (classifier: IMAGE | PIXELS | INPUT; generator: CLASS |
/// CLASS_WEIGHTS, SEED | Z, TRUNCATION), with `spec`'s sizes.
std::vector<TensorSpec> model_inputs(const ModelSpec& spec);
/// The outputs (classifier: LOGITS, PROBABILITIES; generator: IMAGE, PNG, SEED).
std::vector<TensorSpec> model_outputs(const ModelSpec& spec);

/// One requested output: a name of model_outputs, and the classification extension's k
/// (output parameter "classification", int64; 0: the tensor itself).
struct RequestedOutput {
  std::string name;
  int64_t classification = 0;
};

/// A checked classifier ModelInfer: exactly one image source.
struct ClassifyInfer {
  int64_t batch = 0;
  /// IMAGE (encoded files) and PIXELS (uint8 [H, W, 3] each) as a kdeserve.v1 request's
  /// images (model set), decoded and cropped like Classify's; empty for INPUT.
  kdeserve::v1::ClassifyRequest images;
  /// INPUT: float32 [batch, 3, S, S] row-major, preprocessed; with one attention entry seed
  /// per row (FNV-1a of its bytes, so a result depends only on the row).
  std::vector<float> tensors;
  std::vector<uint64_t> tensor_seeds;
  std::vector<RequestedOutput> outputs;  ///< never empty: none requested → every output
  int64_t top_k = 0;                     ///< the largest classification k (0: none)
  std::optional<std::string> attention;  ///< request parameter "attention"
};

/// Checks a classifier's ModelInfer against its model.
ClassifyInfer check_classify_infer(const inference::ModelInferRequest& request,
                                   const ModelConfig& config, const ModelSpec& spec);

/// A checked generator ModelInfer, as a kdeserve.v1 Generate request (model and items set,
/// format raw RGB8: the PNG output is encoded from the pixels).
struct GenerateInfer {
  kdeserve::v1::GenerateRequest request;
  std::vector<RequestedOutput> outputs;  ///< never empty
  std::optional<std::string> attention;
};

/// Checks a generator's ModelInfer against its model.
GenerateInfer check_generate_infer(const inference::ModelInferRequest& request,
                                   const ModelConfig& config, const ModelSpec& spec);

/// Appends an output tensor with its raw little-endian bytes (what tritonclient reads).
void add_raw_output(inference::ModelInferResponse* response, const std::string& name,
                    const std::string& datatype, const std::vector<int64_t>& shape,
                    std::string raw);
/// BYTES elements in the raw encoding: each a 4-byte little-endian length, then the bytes.
std::string encode_bytes_elements(const std::vector<std::string>& elements);

/// The classifier's outputs of one request from its logits [batch, classes] and its ranked
/// top-k (labels; probability descending), in `outputs`' order.
void add_classify_outputs(inference::ModelInferResponse* response,
                          const std::vector<RequestedOutput>& outputs,
                          const std::vector<float>& logits, int64_t classes,
                          const kdeserve::v1::ClassifyResponse& ranked);

/// The generator's outputs from a kdeserve.v1 Generate response of raw RGB8 images
/// [side, side, 3] (PNG: encoded here).
void add_generate_outputs(inference::ModelInferResponse* response,
                          const std::vector<RequestedOutput>& outputs,
                          const kdeserve::v1::GenerateResponse& generated, int64_t side);

}  // namespace kdeserve::server::oip
