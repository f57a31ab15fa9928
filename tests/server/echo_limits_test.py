#!/usr/bin/python3
"""Client-supplied strings the server echoes (model names, x-request-id, bytes in names) never
break a connection or a log line.

Why: gRPC sends a status message in the grpc-message trailer, a header, and a client refuses a
header block over its metadata limit (8 KiB by default); gRPC 1.51 then fails every call on
that HTTP/2 connection. A 10 kB model name echoed in NOT_FOUND did that: the call got
RESOURCE_EXHAUSTED, so did a Generate in flight on the same channel, and after a 1 MB name the
next calls too.

It starts the real binary on free loopback ports with the built-in configuration, once with
--log-format json and once with text, and on ONE channel with the client's default limits:
  - calls GetModelInfo, Classify and Generate with a 10 kB and a 1 MB model name (within
    max_message_bytes) and a name of control characters, quotes, a BiDi override and emoji:
    each gets NOT_FOUND whose message is at most 1024 bytes (errors.h kMaxStatusMessageBytes),
    printable ASCII, names the name's start and still lists the hosted models; a Generate in
    flight on the same channel meanwhile succeeds, and so does the next call;
  - sends a model name that is not UTF-8 (raw bytes): an error, then a call that succeeds;
  - sends x-request-id of 100 printable characters (echoed back); of 1000 characters, of
    32 KiB and one with a space and quotes (accepted, the id replaced by a server one: the
    server's metadata limit is 64 KiB, main.cpp kMaxMetadataBytes); and one over that limit:
    that call fails, and as gRPC 1.51 then ends the connection, the next calls may fail
    UNAVAILABLE (at most twice) until the channel has reconnected, then one succeeds;
  - then SIGTERM; the server's log must be whole lines, every line at most 4 KiB; in json format
    every line parses as a JSON object, and the access lines carry bounded `error` fields.

usage: echo_limits_test.py SERVER_BINARY PROTO_DIR
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

MAX_STATUS_MESSAGE = 1024      # server/errors.h kMaxStatusMessageBytes
MAX_METADATA = 64 * 1024       # server/main.cpp kMaxMetadataBytes
MAX_LOG_LINE = 4096
HOSTED = ["t2t_vit_t_24", "biggan-deep-128"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_protos(proto_dir):
    gen = tempfile.mkdtemp()
    subprocess.check_call(["protoc", f"--proto_path={proto_dir}", f"--python_out={gen}",
                           f"--grpc_python_out={gen}",
                           "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                           "kdeserve/v1/inference.proto"])
    sys.path.insert(0, gen)


def check_message(label, message, name_start):
    size = len(message.encode())
    assert size <= MAX_STATUS_MESSAGE, f"{label}: status message of {size} bytes"
    assert all(32 <= ord(c) < 127 for c in message), f"{label}: not printable ASCII: {message!r}"
    assert "unknown model" in message, f"{label}: {message!r}"
    assert name_start in message, f"{label}: the name's start {name_start!r} not in {message!r}"
    for hosted in HOSTED:
        assert hosted in message, f"{label}: hosted list lost: {message!r}"


def run(server, log_format):
    import grpc
    from kdeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg

    port, mport = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"echo_limits_{log_format}_", suffix=".log",
                                      delete=False)
    proc = subprocess.Popen([server, "--listen", f"127.0.0.1:{port}",
                             "--metrics-listen", f"127.0.0.1:{mport}",
                             "--log-format", log_format], stderr=log)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pbg.InferenceStub(channel)
        t0 = time.time()
        while True:
            assert proc.poll() is None, "server exited early"
            assert time.time() - t0 < 120, "not ready within 120 s"
            try:
                if all(stub.GetModelInfo(pb.GetModelInfoRequest(model=m), timeout=5).ready
                       for m in HOSTED):
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)

        def still_works(after):
            try:
                info = stub.GetModelInfo(pb.GetModelInfoRequest(model=HOSTED[0]), timeout=10)
            except grpc.RpcError as e:
                raise AssertionError(f"after {after}: the next call on the channel failed: "
                                     f"{e.code()} {e.details()!r}") from None
            assert info.name == HOSTED[0]

        weird = "\x00\x07\n\r\t\x1b[2J\x7f\"'\\%{}\u202eevil\u00e9\U0001f600\ufeff" * 3
        calls = {
            "GetModelInfo": lambda n: stub.GetModelInfo(pb.GetModelInfoRequest(model=n),
                                                        timeout=30),
            "Classify": lambda n: stub.Classify(pb.ClassifyRequest(
                model=n, images=[pb.ImageInput(encoded=b"x")]), timeout=30),
            "Generate": lambda n: stub.Generate(pb.GenerateRequest(
                model=n, items=[pb.GenerateItem(class_id=1, seed=1)]), timeout=30),
        }
        for label, name, start in [("10 kB name", "n" * 10240, "n" * 16),
                                   ("1 MB name", "m" * (1 << 20), "m" * 16),
                                   ("odd characters", weird, "\\x00\\x07\\n\\r\\t\\x1b[2J")]:
            for rpc, call in calls.items():
                what = f"{rpc} with a {label}"
                # A Generate in flight on the same connection must survive the error.
                done_at = []
                flight = stub.Generate.future(pb.GenerateRequest(model=HOSTED[1], items=[
                    pb.GenerateItem(class_id=5, seed=1)] * 4), timeout=60)
                flight.add_done_callback(lambda _: done_at.append(time.monotonic()))
                time.sleep(0.02)
                try:
                    call(name)
                    raise AssertionError(f"{what}: answered OK")
                except grpc.RpcError as e:
                    answered_at = time.monotonic()
                    assert e.code() == grpc.StatusCode.NOT_FOUND, \
                        f"{what}: {e.code()} {e.details()!r:.300}"
                    check_message(what, e.details(), start)
                try:
                    assert len(flight.result().images) == 4
                except grpc.RpcError as e:
                    raise AssertionError(f"{what}: the Generate in flight on the channel failed: "
                                         f"{e.code()} {e.details()!r}") from None
                assert done_at and done_at[0] > answered_at, f"{what}: nothing was in flight"
                still_works(what)
        print("long and odd model names: NOT_FOUND with bounded messages, channel intact")

        # A name that is not UTF-8 never reaches the service (protobuf refuses to parse it).
        raw = channel.unary_unary("/kdeserve.v1.Inference/GetModelInfo",
                                  request_serializer=None, response_deserializer=None)
        bad = b"\xff\xfe\xc3(\x00\x1b"
        try:
            raw(b"\x0a" + bytes([len(bad)]) + bad, timeout=10)
            raise AssertionError("a non-UTF-8 model name answered OK")
        except grpc.RpcError as e:
            assert len(e.details().encode()) <= MAX_STATUS_MESSAGE
        still_works("a non-UTF-8 model name")

        def request_id(value):
            return stub.GetModelInfo.with_call(pb.GetModelInfoRequest(model=HOSTED[0]),
                                               metadata=[("x-request-id", value)], timeout=10)
        ident = "r" * 100
        _, call = request_id(ident)
        assert call.code() == grpc.StatusCode.OK
        classify = stub.Classify(pb.ClassifyRequest(model=HOSTED[0], images=[
            pb.ImageInput(raw=pb.RawImage(height=2, width=2, channels=3, data=bytes(12)))]),
            metadata=[("x-request-id", ident)], timeout=60)
        assert classify.request_id == ident, classify.request_id
        for value in ["q" * 1000, "q" * (MAX_METADATA // 2), 'has a space and a "quote"']:
            classify = stub.Classify(pb.ClassifyRequest(model=HOSTED[0], images=[
                pb.ImageInput(raw=pb.RawImage(height=2, width=2, channels=3, data=bytes(12)))]),
                metadata=[("x-request-id", value)], timeout=60)
            assert classify.request_id != value and 0 < len(classify.request_id) <= 128, \
                classify.request_id
        try:
            request_id("o" * (MAX_METADATA + 1024))
            raise AssertionError("metadata over the server's limit was accepted")
        except grpc.RpcError as e:
            assert len(e.details().encode()) <= MAX_STATUS_MESSAGE
            print(f"x-request-id over the metadata limit: {e.code()} {e.details()!r:.200}")
        # gRPC 1.51 ends the whole connection on a header block over the limit: a call sent before
        # the channel notices fails UNAVAILABLE; the channel then reconnects.
        for attempt in range(3):
            try:
                stub.GetModelInfo(pb.GetModelInfoRequest(model=HOSTED[0]), timeout=10,
                                  wait_for_ready=True)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE and attempt < 2, \
                    f"after metadata over the limit: {e.code()} {e.details()!r}"
                print(f"after metadata over the limit: {e.code()} {e.details()!r}, retrying")
        print("x-request-id: echoed when printable and short, replaced otherwise, channel intact")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        log.close()
    assert rc == 0, f"exit code {rc} after SIGTERM"
    with open(log.name, "rb") as f:
        text = f.read()
    assert text.endswith(b"\n"), "the log does not end in a whole line"
    lines = text.decode("utf-8").split("\n")[:-1]
    access = 0
    for number, line in enumerate(lines, 1):
        assert len(line.encode()) <= MAX_LOG_LINE, f"log line {number}: {len(line)} bytes"
        if log_format == "json":
            try:
                record = json.loads(line)
            except ValueError as e:
                raise AssertionError(f"log line {number} is not JSON ({e}): {line[:300]!r}")
            assert isinstance(record, dict) and "level" in record and "msg" in record, line[:300]
            if record["msg"] == "access":
                access += 1
                assert len(record.get("error", "").encode()) <= MAX_STATUS_MESSAGE, line[:300]
                assert len(record["request_id"]) <= 128 and len(record["peer"]) <= 256
        else:
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ ", line), \
                f"log line {number} is not a log record: {line[:300]!r}"
            access += line.split(" ", 3)[2:3] == ["access"]
    # Every call above was logged: 9 unknown-model calls, the rest succeeded or failed in gRPC.
    assert access >= 9 + 4, f"{access} access lines"
    print(f"{log_format} log: {len(lines)} lines, {access} access lines, all well formed")
    os.unlink(log.name)


def main():
    server, proto_dir = sys.argv[1:3]
    compile_protos(proto_dir)
    for log_format in ["json", "text"]:
        run(server, log_format)
    print("echo limits test passed")


if __name__ == "__main__":
    main()
