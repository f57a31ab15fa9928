#!/usr/bin/python3
"""End-to-end check of kdeserve-server: start it on free loopback ports with the built-in
configuration, call every RPC, health, metrics, error codes, then SIGTERM and expect exit 0.

usage: smoke_test.py SERVER_BINARY PROTO_DIR IMAGE_FILE
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# The standard grpc.health.v1 protocol (grpc/src/proto/grpc/health/v1/health.proto), compiled
# here because Debian's python3-grpcio does not ship grpc_health.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""

# The list_services subset of grpc.reflection.v1alpha (the version Debian's gRPC 1.51 serves).
REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request { string list_services = 7; }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response { ListServiceResponse list_services_response = 6; }
}
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    server, proto_dir, image_file = sys.argv[1:4]
    gen = tempfile.mkdtemp()
    subprocess.check_call(["protoc", f"--proto_path={proto_dir}", f"--python_out={gen}",
                           f"--grpc_python_out={gen}",
                           "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                           "kdeserve/v1/inference.proto"])
    for name, text in [("grpc_health/v1/health.proto", HEALTH_PROTO),
                       ("grpc_reflection/v1alpha/reflection.proto", REFLECTION_PROTO)]:
        os.makedirs(os.path.dirname(os.path.join(gen, "src", name)), exist_ok=True)
        with open(os.path.join(gen, "src", name), "w") as f:
            f.write(text)
        subprocess.check_call(["protoc", f"--proto_path={gen}/src", f"--python_out={gen}",
                               f"--grpc_python_out={gen}",
                               "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", name])
    sys.path.insert(0, gen)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from kdeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg

    port, mport = free_port(), free_port()
    t0 = time.time()
    proc = subprocess.Popen([server, "--listen", f"127.0.0.1:{port}",
                             "--metrics-listen", f"127.0.0.1:{mport}"])
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, "server exited early"
            assert time.time() - t0 < 120, "not ready within 120 s"
            try:
                r = health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        print(f"ready after {time.time() - t0:.1f} s")
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == 1
        stub = pbg.InferenceStub(channel)
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            list_services="")]), timeout=10))
        services = {s.name for s in answer.list_services_response.service}
        assert {"kdeserve.v1.Inference", "grpc.health.v1.Health"} <= services, services
        try:
            health.Check(health_pb2.HealthCheckRequest(service="nosuch"))
            raise AssertionError("unknown health service answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND

        models = stub.ListModels(pb.ListModelsRequest())
        assert [m.name for m in models.models] == ["t2t_vit_t_24", "biggan-deep-128"], models
        info = stub.GetModelInfo(pb.GetModelInfoRequest(model="t2t_vit_t_24"))
        assert info.ready and info.kind == pb.MODEL_KIND_CLASSIFIER and info.image_size == 224
        assert "random init" in info.weights_source and len(info.attention_plan) > 0

        image = open(image_file, "rb").read()
        req = pb.ClassifyRequest(model="t2t_vit_t_24", top_k=3,
                                 images=[pb.ImageInput(encoded=image)] * 2)
        r1 = stub.Classify(req)
        assert len(r1.results) == 2 and len(r1.results[0].top_k) == 3
        assert r1.attention == pb.ATTENTION_MODE_KDEFORMER and "kdeformer" in r1.attention_plan
        assert r1.request_id and r1.timing.batch_size >= 2 and r1.timing.compute_seconds > 0
        def same(a, b):  # same classes; probabilities equal up to float rounding of batch shapes
            return [p.index for p in a.top_k] == [p.index for p in b.top_k] and all(
                abs(p.probability - q.probability) <= 1e-5 * max(1.0, p.probability)
                for p, q in zip(a.top_k, b.top_k))
        assert same(r1.results[0], r1.results[1]), r1.results
        single = stub.Classify(pb.ClassifyRequest(model="t2t_vit_t_24", top_k=3,
                                                  images=[pb.ImageInput(encoded=image)]))
        assert same(single.results[0], r1.results[0]), (single.results[0], r1.results[0])
        ex = stub.Classify(pb.ClassifyRequest(model="t2t_vit_t_24", top_k=1,
                                              attention=pb.ATTENTION_MODE_EXACT,
                                              images=[pb.ImageInput(encoded=image)]))
        assert ex.attention == pb.ATTENTION_MODE_EXACT
        raw = pb.RawImage(height=2, width=3, channels=3, data=bytes(range(18)))
        assert len(stub.Classify(pb.ClassifyRequest(model="t2t_vit_t_24",
                                                    images=[pb.ImageInput(raw=raw)])).results[0].top_k) == 5

        g = stub.Generate(pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=207, seed=3), pb.GenerateItem(class_id=1, seed=4)]))
        assert len(g.images) == 2 and g.images[0].data[:8] == b"\x89PNG\r\n\x1a\n"
        assert g.images[0].height == 128 and g.images[0].seed == 3 and len(g.images[0].z) == 128
        g1 = stub.Generate(pb.GenerateRequest(model="biggan-deep-128",
                                              format=pb.IMAGE_FORMAT_RAW_RGB8,
                                              items=[pb.GenerateItem(class_id=207, seed=3)]))
        assert len(g1.images[0].data) == 128 * 128 * 3
        g2 = stub.Generate(pb.GenerateRequest(model="biggan-deep-128", format=pb.IMAGE_FORMAT_RAW_RGB8,
                                              items=[pb.GenerateItem(class_id=207, z=pb.Latent(values=g.images[0].z))]))
        assert g2.images[0].data == g1.images[0].data, "explicit z != seeded z"
        mixed = stub.Generate(pb.GenerateRequest(model="biggan-deep-128", format=pb.IMAGE_FORMAT_RAW_RGB8, items=[
            pb.GenerateItem(class_id=207, seed=3), pb.GenerateItem(class_id=207, seed=3, truncation=0.7),
            pb.GenerateItem(class_id=1, seed=4)]))
        assert [round(i.truncation, 6) for i in mixed.images] == [0.4, 0.7, 0.4], mixed.images
        # Batch shapes change BLAS blocking (the conditional batch norm's linears, the attention's
        # moments), so an item batched with another agrees with it alone to float rounding: at
        # most one 8-bit level, on a few pixels.
        def same_image(a, b):
            diffs = [abs(x - y) for x, y in zip(a, b) if x != y]
            return len(a) == len(b) and max(diffs, default=0) <= 1 and len(diffs) <= len(a) // 100
        assert same_image(mixed.images[0].data, g1.images[0].data), \
            "mixed-truncation request changed an image"
        assert mixed.images[1].data != g1.images[0].data

        def code(fn, request):
            try:
                fn(request, timeout=30)
            except grpc.RpcError as e:
                return e.code()
            return grpc.StatusCode.OK
        C = grpc.StatusCode
        assert code(stub.GetModelInfo, pb.GetModelInfoRequest(model="nope")) == C.NOT_FOUND
        assert code(stub.Classify, pb.ClassifyRequest(model="t2t_vit_t_24")) == C.INVALID_ARGUMENT
        assert code(stub.Classify, pb.ClassifyRequest(model="t2t_vit_t_24", top_k=1001,
                                                      images=[pb.ImageInput(encoded=image)])) == C.INVALID_ARGUMENT
        assert code(stub.Classify, pb.ClassifyRequest(model="t2t_vit_t_24",
                                                      images=[pb.ImageInput(encoded=b"notanimage")])) == C.INVALID_ARGUMENT
        assert code(stub.Classify, pb.ClassifyRequest(model="t2t_vit_t_24",
                                                      images=[pb.ImageInput(encoded=image)] * 9)) == C.INVALID_ARGUMENT
        assert code(stub.Classify, pb.ClassifyRequest(model="biggan-deep-128",
                                                      images=[pb.ImageInput(encoded=image)])) == C.INVALID_ARGUMENT
        assert code(stub.Generate, pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=1000)])) == C.INVALID_ARGUMENT
        assert code(stub.Generate, pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=1, truncation=1.5)])) == C.INVALID_ARGUMENT
        assert code(stub.Generate, pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=1, z=pb.Latent(values=[0.0] * 3))])) == C.INVALID_ARGUMENT
        assert code(stub.Generate, pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=1, z=pb.Latent(values=[float("nan")] * 128))])) == C.INVALID_ARGUMENT

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode()
        for name in ["kdeserve_requests_total", "kdeserve_batch_size_bucket",
                     "kdeserve_model_ready{model=\"biggan-deep-128\"} 1", "kdeserve_build_info"]:
            assert name in metrics, name
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics.encode(),
                               capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr

        # Graceful shutdown: a call in flight when SIGTERM arrives still completes (one item:
        # within the 10 s grace period even in a sanitizer build).
        future = stub.Generate.future(pb.GenerateRequest(model="biggan-deep-128", items=[
            pb.GenerateItem(class_id=5, seed=1)]), timeout=60)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert len(future.result().images) == 1
        rc = proc.wait(timeout=60)
        assert rc == 0, f"exit code {rc} after SIGTERM"

        # A metrics port that is taken: a clear message and a non-zero exit.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            bad = subprocess.run([server, "--listen", f"127.0.0.1:{free_port()}",
                                  "--metrics-listen", f"127.0.0.1:{taken}"],
                                 capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "cannot serve metrics" in bad.stderr, bad.stderr
        # A bad configuration: a clear message and a non-zero exit, before any model loads.
        bad = subprocess.run([server, "--threads", "-3"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "server.threads" in bad.stderr, bad.stderr
        print("smoke test passed")
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    main()
