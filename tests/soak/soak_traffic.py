"""The soak's traffic: hostile payloads and the client workers (valid, hostile, prober).

Every worker runs in its own process (spawned by soak_test.py, so no gRPC state crosses a fork)
with several threads and channels: each valid thread on a connection of its own, the hostile
threads on one shared connection plus a quiet one each (hostile_ops). A thread counts each call
it makes in its own Counter under (group, kind, label, rpc, code), where code is the gRPC code
the client library reported and label is expected_label() of the request; the counters are
merged only after the threads have joined, so the accounting has no races."""

import collections
import glob
import json
import os
import random
import socket
import struct
import threading
import time
import traceback
import urllib.request
import zlib

import grpc
from kdeserve.v1 import inference_pb2 as pb
import health_pb2
import health_pb2_grpc

CLASSIFIERS = ("t2t_vit_t_14", "t2t_vit_7")
GENERATOR = "biggan-deep-128"
HOSTED = CLASSIFIERS + (GENERATOR,)
Z_DIM = 128
MODES = (pb.ATTENTION_MODE_EXACT, pb.ATTENTION_MODE_KDEFORMER)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", -1)]
VALID_TIMEOUT = 120    # s: a valid call never meets its deadline, even behind Generate batches
HOSTILE_TIMEOUT = 60   # s: hostile calls that should be refused quickly
# The hostile images (Payloads.hostile_images), each sent alone in a Classify.
HOSTILE_IMAGE_KINDS = ("truncated_jpeg", "png_header_100000x100000", "png_6000x6000_tiny_idat",
                       "jpeg_sof_6000x6000", "bmp_rle8_6000x6000_no_data",
                       "jpeg_plus_4MB_padding")
# Request bytes that are not a message of any kdeserve.v1 request type: a length-delimited field
# longer than the buffer, an invalid wire type (7), an 11-byte varint, and a proto3 string field
# (model) holding invalid UTF-8. check_payloads() proves that protobuf refuses each of them.
NOT_PROTOBUF = (b"\x0a\xff\xff\x03abc", b"\x0f\x00\x01", b"\x08" + b"\xff" * 10 + b"\x01",
                b"\x0a\x02\xff\xfe")


def expected_label(rpc, model, parsed=True):
    """The `model` label a call must be counted under in kdeserve_requests_total.

    - A request the server cannot read as its message (bytes that are not protobuf) names no
      model the server can know: "unknown", the label unknown model names share
      (service_internal.h), so no client can create series.
    - A message above max_message_bytes (parsed=None) is refused by gRPC's core before any
      server code sees it (server/call_accounting.h): None, not counted at all.
    - ListModels is about no model: "" (as the server counts it).
    - A hosted model's name is its label; any other name (unknown, 10 kB long) is "unknown".
    Calls that end before a handler runs (1 ms deadlines, cancelled calls) were complete,
    readable requests: they keep their model's label; only the code says how they ended."""
    if parsed is None:
        return None  # above max_message_bytes: gRPC's core refuses it unseen, nothing counts it
    if not parsed:
        return "unknown"
    if rpc == "ListModels":
        return ""
    return model if model in HOSTED else "unknown"


# ---- payloads ------------------------------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()


def photos(shared):
    """The real photos (../shared/data/photos, minus the truncated one) and every 16th ImageNet
    sample (some grayscale, some tiny)."""
    files = sorted(p for p in glob.glob(os.path.join(shared, "data/photos/*/*"))
                   if not p.endswith("truncated.jpg"))
    files += sorted(glob.glob(os.path.join(shared, "data/imagenet/images/*.JPEG")))[::16]
    return [read(p) for p in files]


def jpeg_with_size(jpeg, height, width):
    """The JPEG with its SOF header claiming height × width; the scan stays as it was."""
    out = bytearray(jpeg)
    i = 2
    while i + 4 <= len(out):
        assert out[i] == 0xFF, "not at a JPEG marker"
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker")


def png_claiming(width, height, idat=b""):
    """A PNG signature and IHDR claiming width × height RGB, then `idat` (may be empty), IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + (chunk(b"IDAT", idat) if idat else b"")
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def bmp_rle8_claiming(width, height):
    """A BMP with an 8-bit RLE (BI_RLE8) header claiming width × height and no pixel data."""
    palette = bytes(range(256)) * 4
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, 0, 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info + palette


class Payloads:
    """Every request body the workers send, built once."""

    def __init__(self, shared, max_message_bytes, check=False):
        self.photos = photos(shared)
        imagenet = glob.glob(os.path.join(shared, "data/imagenet/images/*.JPEG"))
        self.small = read(min(imagenet, key=os.path.getsize))  # 2 kB: cheap valid requests
        self.truncated = read(os.path.join(shared, "data/photos/skimage/truncated.jpg"))
        jpeg = read(os.path.join(shared, "data/photos/darknet/dog.jpg"))
        self.hostile_images = {
            "truncated_jpeg": self.truncated,
            "png_header_100000x100000": png_claiming(100000, 100000),
            "png_6000x6000_tiny_idat": png_claiming(6000, 6000, zlib.compress(b"\0" * 64)),
            "jpeg_sof_6000x6000": jpeg_with_size(self.small, 6000, 6000),
            "bmp_rle8_6000x6000_no_data": bmp_rle8_claiming(6000, 6000),
            "jpeg_plus_4MB_padding": jpeg + b"\0" * (4 << 20),
        }
        assert tuple(self.hostile_images) == HOSTILE_IMAGE_KINDS
        over = max_message_bytes + (1 << 20)
        self.oversized = {
            "Classify": pb.ClassifyRequest(model=CLASSIFIERS[0], images=[
                pb.ImageInput(encoded=jpeg + b"\0" * over)]).SerializeToString(),
            "Generate": pb.GenerateRequest(model=GENERATOR, items=[pb.GenerateItem(
                class_id=1, z=pb.Latent(values=[0.5] * (over // 4)))]).SerializeToString(),
        }
        self.long_name = "m" * 10240
        if check:
            check_payloads(self, max_message_bytes)


def check_payloads(p, max_message_bytes):
    """The hostile payloads are what they claim to be (else the soak would test nothing)."""
    for body in NOT_PROTOBUF:
        for message in (pb.ClassifyRequest, pb.GenerateRequest):
            try:
                message().ParseFromString(body)
            except Exception:  # google.protobuf.message.DecodeError
                continue
            raise AssertionError(f"{body!r} parses as {message.__name__}")
    assert all(len(b) > max_message_bytes for b in p.oversized.values())
    assert len(p.hostile_images["jpeg_plus_4MB_padding"]) < max_message_bytes


# ---- calls and counting --------------------------------------------------------------------

class Tally:
    """One thread's outcomes: (group, kind, label, rpc, code) → count."""

    def __init__(self):
        self.counts = collections.Counter()
        self.details = {}  # (group, kind, rpc, code) → the first error message seen

    def record(self, group, kind, label, rpc, code, details=None):
        self.counts[(group, kind, label, rpc, code.name)] += 1
        if details is not None:
            self.details.setdefault((group, kind, rpc, code.name), details[:300])

    def call(self, group, kind, label, rpc, fn):
        """Runs a blocking call and records the code the client saw; returns the reply or None."""
        try:
            reply = fn()
            self.record(group, kind, label, rpc, grpc.StatusCode.OK)
            return reply
        except grpc.RpcError as e:
            self.record(group, kind, label, rpc, e.code(), e.details() or "")
            return None

    def future(self, group, kind, label, rpc, fut):
        """Waits for a call future (cancelled or not) and records the code the client saw."""
        try:
            fut.result()
        except grpc.FutureCancelledError:
            pass
        except grpc.RpcError:
            pass
        self.record(group, kind, label, rpc, fut.code(),
                    None if fut.code() == grpc.StatusCode.OK else fut.details() or "")


def stubs(channel):
    return {
        "Classify": channel.unary_unary("/kdeserve.v1.Inference/Classify",
                                        pb.ClassifyRequest.SerializeToString,
                                        pb.ClassifyResponse.FromString),
        "Generate": channel.unary_unary("/kdeserve.v1.Inference/Generate",
                                        pb.GenerateRequest.SerializeToString,
                                        pb.GenerateResponse.FromString),
        "ListModels": channel.unary_unary("/kdeserve.v1.Inference/ListModels",
                                          pb.ListModelsRequest.SerializeToString,
                                          pb.ListModelsResponse.FromString),
        "GetModelInfo": channel.unary_unary("/kdeserve.v1.Inference/GetModelInfo",
                                            pb.GetModelInfoRequest.SerializeToString,
                                            pb.ModelInfo.FromString),
        # Identity serializers: the bytes go on the wire as they are.
        "raw:Classify": channel.unary_unary("/kdeserve.v1.Inference/Classify"),
        "raw:Generate": channel.unary_unary("/kdeserve.v1.Inference/Generate"),
    }


def classify_request(rng, p, model=None, images=None):
    images = images if images is not None else rng.sample(p.photos, rng.randint(1, 3))
    return pb.ClassifyRequest(model=model if model is not None else rng.choice(CLASSIFIERS),
                              top_k=rng.choice([0, 1, 5]), attention=rng.choice(MODES),
                              images=[pb.ImageInput(encoded=b) for b in images])


def generate_request(rng, items=None, mode=None):
    n = items or rng.choice([1, 1, 1, 2])
    truncations = rng.choice([[0.4] * n, [0.4] * n, [0.5] * n, [0.4, 0.7][:n]])
    out = []
    for t in truncations:
        item = pb.GenerateItem(seed=rng.randrange(1 << 32), truncation=t)
        if rng.random() < 0.2:
            item.class_weights.weights.add(class_id=rng.randrange(1000), weight=0.5)
            item.class_weights.weights.add(class_id=rng.randrange(1000), weight=0.5)
            if len({w.class_id for w in item.class_weights.weights}) == 1:
                del item.class_weights.weights[1]
        else:
            item.class_id = rng.randrange(1000)
        out.append(item)
    return pb.GenerateRequest(model=GENERATOR, items=out,
                              attention=mode if mode is not None else rng.choice(MODES),
                              format=rng.choice([pb.IMAGE_FORMAT_PNG, pb.IMAGE_FORMAT_RAW_RGB8]))


# ---- workers -------------------------------------------------------------------------------

def own_channel(address):
    """A channel on a connection of its own (gRPC shares one between channels with equal
    arguments)."""
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS + [
        ("grpc.use_local_subchannel_pool", 1)])


def valid_thread(index, address, p, stop, rng, tally):
    """Valid traffic, each thread on a connection of its own, in a fixed cycle so every kind
    runs early: Classify with real photos (modes drawn per call) on t2t_vit_t_14 (thread 0) and
    t2t_vit_7 (thread 1), ListModels and GetModelInfo between them, and on thread 2 a small
    share of Generate (BigGAN is slow on CPU) between Classify calls on either classifier."""
    channel = own_channel(address)
    s = stubs(channel)
    cycle = (["classify"] * 4 + ["list_models", "classify", "model_info"] if index < 2 else
             ["generate", "classify", "classify", "model_info"])
    i = 0
    while not stop.is_set():
        op = cycle[i % len(cycle)]
        i += 1
        if op == "generate":
            req = generate_request(rng)
            tally.call("valid", op, GENERATOR, "Generate",
                       lambda: s["Generate"](req, timeout=VALID_TIMEOUT))
        elif op == "classify":
            req = classify_request(rng, p, model=CLASSIFIERS[index] if index < 2 else None)
            tally.call("valid", op, req.model, "Classify",
                       lambda: s["Classify"](req, timeout=VALID_TIMEOUT))
        elif op == "list_models":
            tally.call("valid", op, expected_label("ListModels", None), "ListModels",
                       lambda: s["ListModels"](pb.ListModelsRequest(), timeout=VALID_TIMEOUT))
        else:
            model = rng.choice(HOSTED)
            tally.call("valid", op, model, "GetModelInfo",
                       lambda: s["GetModelInfo"](pb.GetModelInfoRequest(model=model),
                                                 timeout=VALID_TIMEOUT))
    channel.close()


def hostile_ops(p, s, quiet, rng, tally, limits):
    """name → (a function making one hostile call (for the batch-mate case also a valid one),
    its weight: calls per round). `s` are the stubs of the shared hostile connection, `quiet`
    those of this thread's own connection, where no other call is in flight: there a call's
    request is written when the call starts (on the calling thread; a busy connection would
    queue it), so a 1 ms deadline or a cancel cannot overtake it. A run with GRPC_TRACE=http on
    the server showed it parse exactly as many streams as the clients started."""
    hostile = lambda kind, label, rpc, fn: tally.call("hostile", kind, label, rpc, fn)

    def bad_image(kind):
        req = classify_request(rng, p, images=[p.hostile_images[kind]])
        hostile(kind, req.model, "Classify", lambda: s["Classify"](req, timeout=HOSTILE_TIMEOUT))

    def burst():
        # Eight clients at once sending the JPEG whose SOF claims 6000×6000: decoding happens on
        # gRPC's threads, and eight of them at once starve everything else there.
        kind = "jpeg_sof_6000x6000"
        reqs = [classify_request(rng, p, images=[p.hostile_images[kind]]) for _ in range(8)]
        futures = [s["Classify"].future(r, timeout=HOSTILE_TIMEOUT) for r in reqs]
        for r, f in zip(reqs, futures):
            tally.future("hostile", "burst8_" + kind, r.model, "Classify", f)

    def garbage_image():
        req = classify_request(rng, p, images=[rng.choice(p.photos), rng.randbytes(
            rng.randint(1, 4096))])
        hostile("garbage_image", req.model, "Classify",
                lambda: s["Classify"](req, timeout=HOSTILE_TIMEOUT))

    def z_1e30_with_batch_mate():
        # A valid Generate sent just before it, with the same mode and truncation: the batcher
        # puts both in one batch (max_queue_delay_ms), so the bad row's batch-mate is valid.
        mode = rng.choice(MODES)
        mate_req = generate_request(rng, items=1, mode=mode)
        mate_req.items[0].truncation = 0.4
        bad = pb.GenerateRequest(model=GENERATOR, attention=mode, items=[
            pb.GenerateItem(class_id=rng.randrange(1000), truncation=0.4,
                            z=pb.Latent(values=[1e30] * Z_DIM))])
        mate_future = quiet["Generate"].future(mate_req, timeout=VALID_TIMEOUT)
        bad_future = s["Generate"].future(bad, timeout=HOSTILE_TIMEOUT)
        tally.future("valid", "generate_batch_mate", GENERATOR, "Generate", mate_future)
        tally.future("hostile", "generate_z_1e30", GENERATOR, "Generate", bad_future)

    def weights_overflow():
        req = pb.GenerateRequest(model=GENERATOR, attention=rng.choice(MODES), items=[
            pb.GenerateItem(class_weights=pb.ClassWeights(weights=[
                pb.ClassWeight(class_id=1, weight=3e38), pb.ClassWeight(class_id=2, weight=3e38)]),
                seed=rng.randrange(1 << 32))])
        hostile("generate_weights_overflow_float", GENERATOR, "Generate",
                lambda: s["Generate"](req, timeout=HOSTILE_TIMEOUT))

    def bad_model_name(long):
        name = p.long_name if long else rng.choice(["resnet50", "t2t_vit_24", "", "BigGAN"])
        kind = "model_name_10kB" if long else "unknown_model"
        label = expected_label("x", name)
        rpc = rng.choice(["Classify", "Generate", "GetModelInfo"])
        if rpc == "Classify":
            req = classify_request(rng, p, model=name, images=[p.small])
        elif rpc == "Generate":
            req = generate_request(rng, items=1)
            req.model = name
        else:
            req = pb.GetModelInfoRequest(model=name)
        hostile(kind, label, rpc, lambda: s[rpc](req, timeout=HOSTILE_TIMEOUT))

    def deadline_1ms():
        # Only calls the server needs far more than 1 ms for: a faster one (ListModels) could
        # end OK on the server while the client's deadline passes with the answer on the wire,
        # an outcome no server can count as the client saw it.
        if rng.random() < 0.75:
            req, rpc = classify_request(rng, p, images=[p.small]), "Classify"
        else:
            req, rpc = generate_request(rng, items=1), "Generate"
        hostile("deadline_1ms", req.model, rpc, lambda: quiet[rpc](req, timeout=0.001))

    def cancel_after_send():
        # The request is small (one write) on the quiet connection, so it is on the wire when
        # future() returns; the cancel comes within a quarter of the server's fastest time for
        # such a call (measured at warm-up), so the server cannot have answered yet.
        if rng.random() < 0.7:
            req, rpc = classify_request(rng, p, images=[p.small]), "Classify"
        else:
            req, rpc = generate_request(rng, items=1), "Generate"
        fut = quiet[rpc].future(req, timeout=HOSTILE_TIMEOUT)
        delay = rng.choice([0.0, rng.uniform(0, limits[rpc] / 4)])
        if delay:
            time.sleep(delay)
        fut.cancel()
        tally.future("hostile", "cancel_after_send", req.model, rpc, fut)

    def not_protobuf():
        rpc = rng.choice(["Classify", "Generate"])
        body = rng.choice(NOT_PROTOBUF)
        hostile("not_protobuf", expected_label(rpc, None, parsed=False), rpc,
                lambda: s["raw:" + rpc](body, timeout=HOSTILE_TIMEOUT))

    def oversized():
        rpc = rng.choice(["Classify", "Generate"])
        hostile("above_max_message_bytes", expected_label(rpc, None, parsed=None), rpc,
                lambda: s["raw:" + rpc](p.oversized[rpc], timeout=HOSTILE_TIMEOUT))

    ops = {"garbage_image": (garbage_image, 2), "burst8_jpeg_sof_6000x6000": (burst, 1),
           "z_1e30_with_batch_mate": (z_1e30_with_batch_mate, 1),
           "weights_overflow": (weights_overflow, 1),
           "unknown_model": (lambda: bad_model_name(False), 2),
           "model_name_10kB": (lambda: bad_model_name(True), 1),
           "deadline_1ms": (deadline_1ms, 3), "cancel_after_send": (cancel_after_send, 3),
           "not_protobuf": (not_protobuf, 2), "oversized": (oversized, 1)}
    for kind in HOSTILE_IMAGE_KINDS:
        ops[kind] = ((lambda k: lambda: bad_image(k))(kind), 1)
    return ops


def hostile_thread(index, address, p, stop, rng, tally, limits):
    """Hostile traffic in rounds: every op of hostile_ops() `weight` times per round, in an
    order drawn per round (so each runs within the first round). The hostile threads share one
    connection (as calls behind one proxy do): a reply that breaks a connection shows in the
    other thread's calls. Each also has a quiet connection of its own (see hostile_ops)."""
    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    quiet_channel = own_channel(address)
    for c in (channel, quiet_channel):
        grpc.channel_ready_future(c).result(timeout=30)
    ops = hostile_ops(p, stubs(channel), stubs(quiet_channel), rng, tally, limits)
    round_ = [name for name in sorted(ops) for _ in range(ops[name][1])]
    while not stop.is_set():
        rng.shuffle(round_)
        for name in round_:
            if stop.is_set():
                break
            ops[name][0]()
            stop.wait(rng.uniform(0.02, 0.1))  # fast refusals must not become a busy loop
    channel.close()
    quiet_channel.close()


def metrics_port_attack(metrics_port, stop, rng, counts):
    """Idle and half-sent TCP connections to the metrics port: three of each held for 3 s, then
    2 s without, over and over."""
    half = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n"
    while not stop.is_set():
        held = []
        for kind in ["idle"] * 3 + ["half_sent"] * 3:
            try:
                c = socket.create_connection(("127.0.0.1", metrics_port), timeout=5)
                if kind == "half_sent":
                    c.sendall(half[:rng.randint(5, len(half))])
                held.append(c)
                counts[kind] += 1
            except OSError:
                counts[kind + "_connect_failed"] += 1
        stop.wait(3)
        for c in held:
            c.close()
        stop.wait(2)


def prober(address, metrics_port, stop, out):
    """gRPC health Check ("" and "readiness" alternately) every 100 ms on a channel of its own,
    and a /metrics GET every second; records each latency (s) and outcome."""
    health, scrapes = [], []
    t0 = time.time()

    def check_loop():
        channel = grpc.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(channel)
        i = 0
        while not stop.is_set():
            service = ("", "readiness")[i % 2]
            i += 1
            start = time.monotonic()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                outcome = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as e:
                outcome = e.code().name
            health.append((time.time() - t0, service, time.monotonic() - start, outcome))
            stop.wait(0.1)
        channel.close()

    def scrape_loop():
        while not stop.is_set():
            start = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=30) as r:
                    r.read()
                    outcome = "OK"
            except OSError as e:
                outcome = type(e).__name__
            scrapes.append((time.time() - t0, time.monotonic() - start, outcome))
            stop.wait(1.0)

    errors = []
    threads = [threading.Thread(target=guarded(check_loop, errors)),
               threading.Thread(target=guarded(scrape_loop, errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(out, "w") as f:
        json.dump({"health": health, "scrapes": scrapes, "errors": errors}, f)


def guarded(target, errors):
    """target, with any exception of the soak's own code kept in `errors` (reported, never
    swallowed: a worker that stops early would leave calls unmade, not miscounted)."""
    def run(*args):
        try:
            target(*args)
        except Exception:
            errors.append(traceback.format_exc())
    return run


def clients(role, address, metrics_port, shared, max_message_bytes, seed, limits, stop, out):
    """A worker process: role "valid" (3 threads) or "hostile" (2 threads + the metrics-port
    attacker). Writes its merged counts to `out` as JSON."""
    p = Payloads(shared, max_message_bytes)
    tallies = [Tally() for _ in range(3 if role == "valid" else 2)]
    port_counts = collections.Counter()
    errors, threads = [], []
    for i, tally in enumerate(tallies):
        rng = random.Random(seed * 100 + i)
        if role == "valid":
            target, args = valid_thread, (i, address, p, stop, rng, tally)
        else:
            target, args = hostile_thread, (i, address, p, stop, rng, tally, limits)
        threads.append(threading.Thread(target=guarded(target, errors), args=args))
    if role == "hostile":
        threads.append(threading.Thread(target=guarded(metrics_port_attack, errors), args=(
            metrics_port, stop, random.Random(seed), port_counts)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total, details = collections.Counter(), {}
    for tally in tallies:
        total.update(tally.counts)
        for k, v in tally.details.items():
            details.setdefault("/".join(k), v)
    with open(out, "w") as f:
        json.dump({"calls": [list(k) + [n] for k, n in sorted(total.items())],
                   "details": details, "metrics_port_connections": dict(port_counts),
                   "errors": errors}, f)
