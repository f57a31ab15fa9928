#!/usr/bin/python3
"""Example Python client for kdeserve (kdeserve.v1.Inference + grpc.health.v1.Health).

Uses Debian's python3-grpcio (run it with /usr/bin/python3) and the stubs the CMake build
generates into <build>/client/python:

    PYTHONPATH=build/client/python /usr/bin/python3 client/python/kdeserve_client.py \
        --address localhost:8500 classify cat.jpg
"""

import argparse
import os
import sys

import grpc

try:
    from kdeserve.v1 import inference_pb2, inference_pb2_grpc
    import health_pb2
    import health_pb2_grpc
except ImportError as error:  # pragma: no cover - a setup problem, not a code path
    sys.exit(
        "kdeserve_client: cannot import the generated stubs (%s); build the "
        "'kdeserve_python_stubs' target and set PYTHONPATH=<build>/client/python" % error)

MAX_RECEIVE_BYTES = 64 * 1024 * 1024  # gRPC's 4 MiB default is too small for BigGAN PNGs

EXIT_OK, EXIT_NOT_SERVING, EXIT_USAGE, EXIT_LOCAL, EXIT_RPC_BASE = 0, 1, 2, 3, 10

# Mode names from the proto enum (ATTENTION_MODE_PERFORMER -> "performer"): exact, kdeformer,
# performer, reformer, scatterbrain, hyperattention, wildcat, thinformer; "default" is the
# model's configured default.
ATTENTION = {"default": inference_pb2.ATTENTION_MODE_UNSPECIFIED}
ATTENTION.update({
    name[len("ATTENTION_MODE_"):].lower(): number
    for name, number in inference_pb2.AttentionMode.items()
    if number != inference_pb2.ATTENTION_MODE_UNSPECIFIED})


def attention_name(mode):
    """The CLI name of a mode number ("performer"), "mode N" for one this client lacks."""
    for name, number in ATTENTION.items():
        if number == mode:
            return name
    return "mode %d" % mode

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

HINTS = {
    grpc.StatusCode.INVALID_ARGUMENT: "the request was rejected as invalid; fix the request",
    grpc.StatusCode.NOT_FOUND: "the model or health service name is unknown to the server",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the server is overloaded or a message was too large; "
                                        "retry later or send less per request",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the deadline passed; raise --deadline",
    grpc.StatusCode.UNAVAILABLE: "the server is unreachable, loading or draining; retry",
    grpc.StatusCode.INTERNAL: "the server failed while running the model (see its logs)",
    grpc.StatusCode.CANCELLED: "the call was cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "the server does not implement this method",
}


class KdeserveClient:
    """A thin typed wrapper over one channel; every call uses the same deadline."""

    def __init__(self, address, deadline=60.0, max_receive_bytes=MAX_RECEIVE_BYTES):
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", max_receive_bytes)])
        self.inference = inference_pb2_grpc.InferenceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = deadline if deadline and deadline > 0 else None

    def classify(self, model, images, top_k=0, attention="default"):
        request = inference_pb2.ClassifyRequest(
            model=model, top_k=top_k, attention=ATTENTION[attention],
            images=[inference_pb2.ImageInput(encoded=data) for data in images])
        return self.inference.Classify(request, timeout=self.timeout)

    def generate(self, model, class_ids, seed=None, truncation=0.0, attention="default"):
        items = []
        for i, class_id in enumerate(class_ids):
            item = inference_pb2.GenerateItem(class_id=class_id, truncation=truncation)
            if seed is not None:
                item.seed = seed + i
            items.append(item)
        request = inference_pb2.GenerateRequest(
            model=model, items=items, format=inference_pb2.IMAGE_FORMAT_PNG,
            attention=ATTENTION[attention])
        return self.inference.Generate(request, timeout=self.timeout)

    def list_models(self):
        return list(self.inference.ListModels(inference_pb2.ListModelsRequest(),
                                              timeout=self.timeout).models)

    def health(self, service=""):
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service),
                                          timeout=self.timeout)
        return response.status

    def close(self):
        self.channel.close()


def expand_paths(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS)
                            and os.path.isfile(os.path.join(path, name)))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError("no such file or directory: " + path)
    return files


class NoModelError(Exception):
    """The server hosts no model of the kind a command needs."""


def first_model(client, kind):
    for info in client.list_models():
        if info.kind == kind:
            print("using model %s (pass --model to choose)" % info.name, file=sys.stderr)
            return info.name
    raise NoModelError("the server hosts no %s; pass --model"
                       % inference_pb2.ModelKind.Name(kind))


def class_list(text):
    try:
        classes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("needs class ids like 207,980, got %r" % text)
    if not all(0 <= c <= 999 for c in classes):
        raise argparse.ArgumentTypeError("class ids are 0..999, got %r" % text)
    return classes


def cmd_classify(client, args):
    paths = expand_paths(args.paths)
    if not paths:
        print("kdeserve_client: no image files found", file=sys.stderr)
        return EXIT_LOCAL
    model = args.model or first_model(client, inference_pb2.MODEL_KIND_CLASSIFIER)
    for begin in range(0, len(paths), args.batch):
        batch = paths[begin:begin + args.batch]
        images = []
        for path in batch:
            with open(path, "rb") as f:
                images.append(f.read())
        response = client.classify(model, images, args.top_k, args.attention)
        print("[%d/%d] %d images, compute %.3f s" % (begin + len(batch), len(paths), len(batch),
                                                     response.timing.compute_seconds),
              file=sys.stderr)
        for path, result in zip(batch, response.results):
            print(path)
            for rank, p in enumerate(result.top_k, 1):
                print("  %d. %.4f  %d  %s  %s" % (rank, p.probability, p.index, p.wnid, p.label))
    return EXIT_OK


def cmd_generate(client, args):
    model = args.model or first_model(client, inference_pb2.MODEL_KIND_GENERATOR)
    class_ids = [c for c in args.classes for _ in range(args.count)]
    response = client.generate(model, class_ids, args.seed, args.truncation, args.attention)
    os.makedirs(args.out, exist_ok=True)
    seeds = []
    for class_id, image in zip(class_ids, response.images):
        path = os.path.join(args.out, "%s_class%d_seed%d.png" % (model, class_id, image.seed))
        with open(path, "wb") as f:
            f.write(image.data)
        print("%s  class %d  seed %d" % (path, class_id, image.seed))
        seeds.append(str(image.seed))
    print("seeds: " + ",".join(seeds))
    return EXIT_OK


def cmd_models(client, args):
    for info in client.list_models():
        print("%-24s %-11s ready=%s device=%s default=%s allowed=%s" % (
            info.name, inference_pb2.ModelKind.Name(info.kind), info.ready, info.device,
            inference_pb2.AttentionMode.Name(info.default_attention),
            ",".join(attention_name(m) for m in info.allowed_attention)))
        for plan in info.plans:
            print("  %-14s %s" % (attention_name(plan.attention), plan.description))
    return EXIT_OK


def cmd_health(client, args):
    status = client.health(args.service)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return EXIT_OK if status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="localhost:8500")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds; 0 = none")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("classify")
    p.add_argument("--model", default="")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--attention", choices=sorted(ATTENTION), default="default")
    p.add_argument("paths", nargs="+")
    p = commands.add_parser("generate")
    p.add_argument("--model", default="")
    p.add_argument("--classes", type=class_list, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seed", type=int)
    p.add_argument("--truncation", type=float, default=0.0)
    p.add_argument("--out", default=".")
    p.add_argument("--attention", choices=sorted(ATTENTION), default="default")
    commands.add_parser("models")
    p = commands.add_parser("health")
    p.add_argument("--service", default="")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    client = KdeserveClient(args.address, args.deadline)
    handler = {"classify": cmd_classify, "generate": cmd_generate, "models": cmd_models,
               "health": cmd_health}[args.command]
    try:
        return handler(client, args)
    except grpc.RpcError as error:
        code = error.code()
        print("kdeserve_client: %s failed: %s (%s): %s" % (
            args.command, code.name, HINTS.get(code, "unexpected status"), error.details()),
            file=sys.stderr)
        return EXIT_RPC_BASE + code.value[0]
    except NoModelError as error:
        print("kdeserve_client: %s" % error, file=sys.stderr)
        return EXIT_RPC_BASE + grpc.StatusCode.NOT_FOUND.value[0]
    except (OSError, ValueError) as error:
        print("kdeserve_client: %s" % error, file=sys.stderr)
        return EXIT_LOCAL
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
