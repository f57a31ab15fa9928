#!/usr/bin/python3
"""Issue 10's findings against the real kdeserve-server binary: one client must never hurt
another, and every request is accounted for. Each test failed on the server before the fix.

Run by ctest (label `integration`) like integration_test.py (same environment)."""

import concurrent.futures
import datetime
import io
import json
import os
import signal
import struct
import sys
import threading
import time
import unittest
import zlib

import grpc
from kdeserve.v1 import inference_pb2 as pb
import health_pb2

from integration_test import (CLASSIFIER, DOG, EXACT_ONLY, GENERATOR, SERVER, Server, code_of,
                              metric_value, model_yaml, read)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def sanitized_server():
    """The server binary is an ASan or TSan build: its allocator says nothing about RSS, and
    TSan's exit (shadow memory, race report pass) takes a second or more after main returns."""
    with open(SERVER, "rb") as f:
        binary = f.read()
    return b"AddressSanitizer" in binary or b"ThreadSanitizer" in binary


def log_seconds(log_path, message_prefix):
    """Wall-clock time (s since the epoch) of the first JSON log line whose msg starts with
    message_prefix."""
    with open(log_path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("msg", "").startswith(message_prefix):
                stamp = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
                return stamp.timestamp()
    raise AssertionError(f"no log line starting with {message_prefix!r} in {log_path}")


def big_png(side):
    """A valid side×side 8-bit RGB PNG of noise-free gradients: cheap to send, costly to decode."""
    row = bytes([0]) + bytes((x * 255 // side) % 256 for x in range(side)) * 3
    raw = row * side
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def requests_by_code(text, model, rpc):
    """{code: count} of kdeserve_requests_total for model and rpc."""
    out = {}
    for code in ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                 "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE"):
        v = metric_value(text, "kdeserve_requests_total", model=model, rpc=rpc, code=code)
        if v:
            out[code] = int(v)
    return out


def delta(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def death_key(label, code):
    """A call that dies (deadline, cancel) before gRPC has read its message is counted under
    model "unknown" (the server never learned its model): for those codes only the sum over the
    labels is exact."""
    return ("*" if code in ("CANCELLED", "DEADLINE_EXCEEDED") else label, code)


def classify_request(model=EXACT_ONLY, image=None):
    return pb.ClassifyRequest(model=model, top_k=1,
                              images=[pb.ImageInput(encoded=image or read(DOG))])


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class AccountingTest(unittest.TestCase):
    """Finding 7: every RPC that reaches the server is counted once, with the client's code."""

    def test_every_call_is_counted_once_with_the_code_the_client_saw(self):
        server = Server([model_yaml(EXACT_ONLY, ["exact"], "exact", 4, 200, 64, 4)],
                        server_yaml="  max_message_bytes: 1048576\n")
        try:
            raw = server.channel.unary_unary("/kdeserve.v1.Inference/Classify",
                                             request_serializer=None, response_deserializer=None)
            raw_seen = {}  # (model label, code name) -> count

            def record(label, code):
                raw_seen[(label, code.name)] = raw_seen.get((label, code.name), 0) + 1

            before = server.metrics()
            for _ in range(3):
                record(EXACT_ONLY, code_of(lambda: server.stub.Classify(classify_request(),
                                                                        timeout=60)))
            for _ in range(3):  # not a protobuf message
                record("unknown", code_of(lambda: raw(b"\xff\xff\xff\xff garbage", timeout=10)))
            for _ in range(2):  # above max_message_bytes: refused inside gRPC's core, which
                # publishes no call to the application (server/call_accounting.h)
                self.assertEqual(code_of(lambda: raw(b"\x0a" + b"\x00" * (2 << 20), timeout=10)),
                                 grpc.StatusCode.RESOURCE_EXHAUSTED)
            record("unknown", code_of(lambda: server.stub.Classify(
                classify_request(model="no-such-model"), timeout=10)))
            for _ in range(20):  # deadlines too short to be served
                record(EXACT_ONLY, code_of(lambda: server.stub.Classify(classify_request(),
                                                                        timeout=0.001)))
            for _ in range(4):  # cancelled while queued (the batch waits 200 ms to fill)
                future = server.stub.Classify.future(classify_request(), timeout=60)
                time.sleep(0.05)
                future.cancel()
                record(EXACT_ONLY, future.code() if future.code() else grpc.StatusCode.CANCELLED)
            time.sleep(1.0)  # every call ended on the server side
            after = server.metrics()
            counted = {}
            for label in (EXACT_ONLY, "unknown"):
                for code, n in delta(requests_by_code(after, label, "Classify"),
                                     requests_by_code(before, label, "Classify")).items():
                    key = death_key(label, code)
                    counted[key] = counted.get(key, 0) + n
            seen = {}
            for (label, code), n in raw_seen.items():
                key = death_key(label, code)
                seen[key] = seen.get(key, 0) + n
            # A 1 ms call that the server answered in time is counted with the client's code
            # too; what matters is that the two agree exactly. Only a call whose deadline
            # passed before gRPC's core read its message is never published to any server code
            # (server/call_accounting.h): DEADLINE_EXCEEDED may fall short by those.
            key = ("*", "DEADLINE_EXCEEDED")
            self.assertLessEqual(counted.pop(key, 0), seen.pop(key, 0))
            self.assertEqual(counted, seen, server.logs())
            self.assertIn(("unknown", "INVALID_ARGUMENT"), seen)
            self.assertIn(("*", "CANCELLED"), seen)
            self.assertIn((EXACT_ONLY, "OK"), seen)
        finally:
            server.stop()


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class IsolationTest(unittest.TestCase):
    """Finding 1: a bad row does not fail its batch-mates."""

    def test_extreme_inputs_fail_alone(self):
        server = Server([model_yaml(GENERATOR, ["exact", "kdeformer"], "kdeformer", 4, 300, 32, 4)])
        try:
            def generate(item):
                return code_of(lambda: server.stub.Generate(pb.GenerateRequest(
                    model=GENERATOR, items=[item], attention=pb.ATTENTION_MODE_KDEFORMER),
                    timeout=300))
            good = [pb.GenerateItem(class_id=207 + i, seed=i) for i in range(2)]
            bad_z = pb.GenerateItem(class_id=1, z=pb.Latent(values=[1e30] * 128))
            bad_weights = pb.GenerateItem(class_weights=pb.ClassWeights(weights=[
                pb.ClassWeight(class_id=1, weight=3e38), pb.ClassWeight(class_id=2, weight=3e38)]),
                seed=5)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(generate, item) for item in [good[0], bad_z, bad_weights,
                                                                    good[1]]]
                codes = [f.result() for f in futures]
            self.assertEqual(codes[0], grpc.StatusCode.OK, server.logs())
            self.assertEqual(codes[3], grpc.StatusCode.OK, server.logs())
            self.assertEqual(codes[1], grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(codes[2], grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            server.stop()


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class AdmissionTest(unittest.TestCase):
    """Findings 2, 5, 6 and 8: admission before work, dead requests free their slots, queued
    requests hold only what the model needs, requests are admitted whole."""

    def test_refused_requests_are_not_decoded_and_health_stays_fast(self):
        # One queue slot and a batch that waits 2 s: every request after the first is refused.
        server = Server([model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 2000, 1, 1)],
                        server_yaml="  decode_threads: 1\n")
        try:
            heavy = big_png(5000)  # 25 Mpx: ~1 s of decoding each
            first = server.stub.Classify.future(classify_request(image=heavy), timeout=120)
            time.sleep(0.2)
            latencies, stop = [], threading.Event()

            def probe():
                while not stop.is_set():
                    t0 = time.monotonic()
                    server.health.Check(health_pb2.HealthCheckRequest(service="readiness"),
                                        timeout=10)
                    latencies.append(time.monotonic() - t0)
                    time.sleep(0.05)
            prober = threading.Thread(target=probe)
            prober.start()
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                refused = list(pool.map(lambda _: code_of(lambda: server.stub.Classify(
                    classify_request(image=heavy), timeout=120)), range(6)))
            refused_in = time.monotonic() - t0
            first.result()
            stop.set()
            prober.join()
            print(f"figures: 6 refusals in {refused_in * 1000:.0f} ms; health max "
                  f"{max(latencies) * 1000:.1f} ms over {len(latencies)} checks", file=sys.stderr)
            self.assertEqual(refused, [grpc.StatusCode.RESOURCE_EXHAUSTED] * 6)
            # Refused at admission, before any decoding (each decode alone takes ~1 s).
            self.assertLess(refused_in, 1.0)
            self.assertLess(max(latencies), 0.5, latencies)
        finally:
            server.stop()

    def test_expired_and_cancelled_requests_free_their_slots(self):
        server = Server([model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 3000, 2, 1)])
        try:
            doomed = [server.stub.Classify.future(classify_request(), timeout=0.3)
                      for _ in range(1)]
            cancelled = server.stub.Classify.future(classify_request(), timeout=60)
            time.sleep(0.1)
            cancelled.cancel()
            time.sleep(0.4)  # the deadline passed; the batch would form only at 3 s
            t0 = time.monotonic()
            codes = [code_of(lambda: server.stub.Classify(classify_request(), timeout=60))]
            waited = time.monotonic() - t0
            self.assertEqual(codes, [grpc.StatusCode.OK], server.logs())
            self.assertEqual(doomed[0].code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertGreater(waited, 2.0)  # it waited for its batch instead of being refused
        finally:
            server.stop()

    def test_queued_requests_do_not_pin_their_messages(self):
        server = Server([model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 8000, 8, 1)])
        try:
            padded = read(DOG)
            # DOG is a PNG: its IEND ends the image, 60 MB of padding follow it.
            padded += b"\0" * (60 << 20)
            server.stub.Classify(classify_request(), timeout=60)  # warm
            base = rss_bytes(server.proc.pid)
            futures = [server.stub.Classify.future(classify_request(image=padded), timeout=60)
                       for _ in range(3)]
            time.sleep(4.0)  # received, decoded and queued; the batch forms at 8 s
            queued_rss = rss_bytes(server.proc.pid) - base
            text = server.metrics()
            queue_bytes = metric_value(text, "kdeserve_queue_bytes", model=EXACT_ONLY)
            capacity = metric_value(text, "kdeserve_queue_bytes_capacity", model=EXACT_ONLY)
            print(f"figures: RSS +{queued_rss / 2**20:.1f} MiB with 3 x 60 MB requests queued; "
                  f"queue_bytes {queue_bytes:.0f}", file=sys.stderr)
            for f in futures:
                self.assertEqual(len(f.result().results), 1)
            self.assertIsNotNone(queue_bytes)
            self.assertLess(queue_bytes, 3 * 1_000_000)  # crops only, not 3 × 60 MB
            self.assertEqual(capacity, 256 << 20)
            # The sanitizers' allocators keep freed memory (ASan's 256 MiB quarantine) or
            # shadow it (TSan), and ignore malloc_trim: RSS says nothing there.
            if not sanitized_server():
                self.assertLess(queued_rss, 100 << 20, f"RSS grew by {queued_rss >> 20} MiB")
        finally:
            server.stop()

    def test_a_request_is_admitted_whole_or_not_at_all(self):
        server = Server([model_yaml(GENERATOR, ["exact"], "exact", 3, 0, 2, 3)])
        try:
            items = [pb.GenerateItem(class_id=1, seed=1, truncation=t) for t in (0.3, 0.5, 0.7)]
            before = metric_value(server.metrics(), "kdeserve_batches_total", model=GENERATOR) or 0
            t0 = time.monotonic()
            code = code_of(lambda: server.stub.Generate(
                pb.GenerateRequest(model=GENERATOR, items=items), timeout=300))
            elapsed = time.monotonic() - t0
            after = metric_value(server.metrics(), "kdeserve_batches_total", model=GENERATOR) or 0
            self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(after, before, "parts of a refused request were computed")
            self.assertLess(elapsed, 1.0)
            ok = code_of(lambda: server.stub.Generate(
                pb.GenerateRequest(model=GENERATOR, items=items[:2]), timeout=300))
            self.assertEqual(ok, grpc.StatusCode.OK, server.logs())
        finally:
            server.stop()


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class GraceTest(unittest.TestCase):
    """Finding 9: the process exits within its shutdown grace period."""

    def test_exit_within_the_grace_period_under_load(self):
        server = Server([model_yaml(GENERATOR, ["exact"], "exact", 4, 0, 32, 4),
                         model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 0, 64, 8)], grace=2)
        try:
            heavy = big_png(4000)
            pool = concurrent.futures.ThreadPoolExecutor(12)
            items = [pb.GenerateItem(class_id=i, seed=i) for i in range(4)]
            for _ in range(6):
                pool.submit(code_of, lambda: server.stub.Generate(
                    pb.GenerateRequest(model=GENERATOR, items=items), timeout=300))
            for _ in range(6):
                pool.submit(code_of, lambda: server.stub.Classify(
                    classify_request(image=heavy), timeout=300))
            time.sleep(1.5)  # a batch runs, more are queued, images are decoding
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=60)
            took = time.monotonic() - t0
            pool.shutdown(wait=True)
            print(f"figures: exited {took:.2f} s after SIGTERM (grace 2 s)", file=sys.stderr)
            self.assertEqual(rc, 0, server.logs())
            # The server exits at most 0.2 s after the grace period, its teardown included
            # (2.27 s measured here); the rest of the margin is for a loaded test machine.
            # Before the fix: 5.7 s; with an unbounded teardown, up to 3.8 s.
            self.assertLess(took, 2.0 + 1.2,
                            f"exited {took:.2f} s after SIGTERM, grace 2 s:\n{server.logs()}")
        finally:
            server.stop()

    def test_an_idle_server_exits_at_once_although_clients_stay_connected(self):
        # gRPC's Shutdown(deadline) waits for clients to close their connections, which idle
        # ones never do, and civetweb stopped in 2 s polls: an idle server took the whole grace
        # period plus 0-2 s (2.2-3.6 s with grace 2 s), whatever its clients did.
        server = Server([model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 0, 64, 8)], grace=5)
        try:
            second = grpc.insecure_channel(server.address)
            grpc.channel_ready_future(second).result(timeout=30)
            self.assertEqual(code_of(lambda: server.stub.Classify(classify_request(), timeout=60)),
                             grpc.StatusCode.OK)
            server.metrics()
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=60)
            took = time.monotonic() - t0
            second.close()
            print(f"figures: idle server exited {took:.2f} s after SIGTERM (grace 5 s)",
                  file=sys.stderr)
            self.assertEqual(rc, 0, server.logs())
            # What the server controls: from the signal to its last log line (0.2 s measured
            # under TSan in CI). The process exit adds the runtime's teardown: under TSan in CI
            # it took over 1.5 s, so there the bound only says the grace period was not waited.
            server.log.flush()
            drained = (log_seconds(server.log_path, "stopped") -
                       log_seconds(server.log_path, "signal 15"))
            print(f"figures: shutdown logged {drained:.2f} s after the signal", file=sys.stderr)
            self.assertLess(drained, 1.0, server.logs())
            self.assertLess(took, 4.0 if sanitized_server() else 1.5, server.logs())
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
