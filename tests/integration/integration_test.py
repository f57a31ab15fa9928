#!/usr/bin/python3
"""Integration tests: the real kdeserve-server binary on free loopback ports, called through the
C++ CLI (kdeserve-cli) and the Python client, plus a real Prometheus scraping its metrics.

Run by ctest (label `integration`) with /usr/bin/python3 (Debian's python3-grpcio). Environment:
KDESERVE_SERVER, KDESERVE_CLI, KDESERVE_PROMETHEUS (optional), KDESERVE_SHARED_DIR, and
PYTHONPATH holding the generated stubs (<build>/client/python)."""

import concurrent.futures
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

import grpc
from kdeserve.v1 import inference_pb2 as pb
from kdeserve.v1 import inference_pb2_grpc as pb_grpc
import health_pb2
import health_pb2_grpc

SERVER = os.environ.get("KDESERVE_SERVER", "")
CLI = os.environ.get("KDESERVE_CLI", "")
PROMETHEUS = os.environ.get("KDESERVE_PROMETHEUS", "/usr/bin/prometheus")
SHARED = os.environ.get("KDESERVE_SHARED_DIR", os.path.join(os.path.dirname(__file__), "../../../shared"))
DOG = os.path.join(SHARED, "data/photos/t2t-vit/dog.png")
TRUNCATED = os.path.join(SHARED, "data/photos/skimage/truncated.jpg")
CLASSIFIER = "t2t_vit_t_14"     # transformer tokens: KDEformer runs in its T2T layers
EXACT_ONLY = "t2t_vit_7"        # configured to allow exact attention only
GENERATOR = "biggan-deep-128"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_yaml(name, allowed, default, max_batch, delay_ms, queue, items, extra=""):
    return f"""  - name: {name}
    init_seed: 0
    device: cpu
    default_attention: {default}
    allowed_attention: [{", ".join(allowed)}]
    batching:
      max_batch_size: {max_batch}
      max_queue_delay_ms: {delay_ms}
      max_queue_length: {queue}
      max_items_per_request: {items}
""" + extra


class Server:
    """A kdeserve-server process with its own config, ports and log file."""

    def __init__(self, models, grace=10, tls=None, server_yaml=""):
        """tls: (cert_file, key_file) to serve TLS; the test channel then trusts cert_file.
        server_yaml: more lines of the config's `server:` block (indented by two spaces)."""
        self.dir = tempfile.mkdtemp(prefix="kdeserve-it-")
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        tls_line = f"  tls: {{cert_file: {tls[0]}, key_file: {tls[1]}}}\n" if tls else ""
        config = os.path.join(self.dir, "server.yaml")
        with open(config, "w") as f:
            f.write(f"server:\n  listen: {self.address}\n"
                    f"  metrics_listen: 127.0.0.1:{self.metrics_port}\n"
                    f"  threads: 2\n  shutdown_grace_seconds: {grace}\n" + server_yaml + tls_line +
                    "logging:\n  level: info\n  format: json\nmodels:\n" + "".join(models))
        self.log_path = os.path.join(self.dir, "server.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([SERVER, "--config", config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=read(tls[0]))
            self.channel = grpc.secure_channel(self.address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(self.address, options=options)
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.wait_ready()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                reply = self.health.Check(health_pb2.HealthCheckRequest(service="readiness"),
                                          timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready in time:\n" + self.logs())

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-4000:]

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        """SIGTERM, then the exit status must be 0: in a sanitizer build a report (ASan, UBSan,
        TSan, LeakSanitizer at exit) makes it non-zero, and the test fails with the report."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        self.log.flush()
        with open(self.log_path) as f:
            log = f.read()
        self.channel.close()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if killed or self.proc.returncode != 0:
            report = log.find("Sanitizer")
            log = log[max(0, log.rfind("\n", 0, report)):][:8000] if report >= 0 else log[-4000:]
            raise AssertionError(f"server exited with {self.proc.returncode}"
                                 f"{' (killed: no exit 60 s after SIGTERM)' if killed else ''}:\n{log}")


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        pairs = dict(p.split("=", 1) for p in label_text.rstrip("}").split(",") if "=" in p)
        pairs = {k: v.strip('"') for k, v in pairs.items()}
        if all(pairs.get(k) == v for k, v in labels.items()):
            total += float(value)
            found = True
    return total if found else None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class ServiceTest(unittest.TestCase):
    """Everything that one long-lived server can show."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DOG):
            raise unittest.SkipTest(f"missing shared file {DOG}")
        cls.server = Server([
            model_yaml(CLASSIFIER, ["exact", "kdeformer"], "kdeformer", 8, 50, 64, 8),
            model_yaml(EXACT_ONLY, ["exact"], "exact", 8, 5, 64, 8),
            model_yaml(GENERATOR, ["exact", "kdeformer"], "kdeformer", 4, 5, 32, 4),
        ])
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def classify(self, model=CLASSIFIER, images=None, attention=pb.ATTENTION_MODE_UNSPECIFIED,
                 top_k=3, timeout=60):
        images = [read(DOG)] if images is None else images
        return self.stub.Classify(pb.ClassifyRequest(
            model=model, top_k=top_k, attention=attention,
            images=[pb.ImageInput(encoded=b) for b in images]), timeout=timeout)

    def test_health_live_and_ready(self):
        for service in ("", "readiness"):
            reply = self.server.health.Check(health_pb2.HealthCheckRequest(service=service))
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_list_models_and_info(self):
        names = [m.name for m in self.stub.ListModels(pb.ListModelsRequest()).models]
        self.assertEqual(sorted(names), sorted([CLASSIFIER, EXACT_ONLY, GENERATOR]))
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(model=CLASSIFIER))
        self.assertEqual(info.kind, pb.MODEL_KIND_CLASSIFIER)
        self.assertTrue(info.ready)
        self.assertIn("random", info.weights_source)
        groups = {layer.group: layer.method for layer in info.attention_plan}
        self.assertEqual(groups.get("t2t_layer1"), "kdeformer")
        self.assertEqual(groups.get("blocks"), "exact")
        self.assertEqual(code_of(lambda: self.stub.GetModelInfo(
            pb.GetModelInfoRequest(model="nope"))), grpc.StatusCode.NOT_FOUND)

    def test_classify_python_client_both_modes(self):
        for mode in (pb.ATTENTION_MODE_EXACT, pb.ATTENTION_MODE_KDEFORMER):
            reply = self.classify(attention=mode, images=[read(DOG), read(DOG)])
            self.assertEqual(reply.attention, mode)
            self.assertEqual(len(reply.results), 2)
            self.assertEqual(len(reply.results[0].top_k), 3)
            top = reply.results[0].top_k[0]
            self.assertTrue(0 <= top.index < 1000 and top.label and top.wnid.startswith("n"))
            self.assertGreaterEqual(reply.timing.compute_seconds, 0)
        default = self.classify()
        self.assertEqual(default.attention, pb.ATTENTION_MODE_KDEFORMER)
        self.assertIn("t2t_layer1=kdeformer", default.attention_plan)
        # The same image gives the same answer whatever it is batched with.
        again = self.classify(attention=pb.ATTENTION_MODE_KDEFORMER)
        self.assertEqual(again.results[0].top_k[0].index, default.results[0].top_k[0].index)

    def test_python_example_client(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "../../client/python/kdeserve_client.py")
        out = subprocess.run([sys.executable, script, "--address", self.server.address,
                              "classify", "--model", CLASSIFIER, DOG],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("dog.png", out.stdout)
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, script, "--address", self.server.address,
                                  "generate", "--model", GENERATOR, "--classes", "207",
                                  "--seed", "3", "--out", d],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(len([f for f in os.listdir(d) if f.endswith(".png")]), 1)

    def test_classify_and_generate_cpp_cli(self):
        out = subprocess.run([CLI, "--address", self.server.address, "classify", "--model",
                              CLASSIFIER, "--attention", "exact", "--top-k", "2", DOG],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("dog.png", out.stdout)
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([CLI, "--address", self.server.address, "generate", "--model",
                                  GENERATOR, "--classes", "207", "--seed", "5", "--out", d],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            pngs = [f for f in os.listdir(d) if f.endswith(".png")]
            self.assertEqual(len(pngs), 1)
            self.assertEqual(read(os.path.join(d, pngs[0]))[:8], b"\x89PNG\r\n\x1a\n")
        out = subprocess.run([CLI, "--address", self.server.address, "health", "--service",
                              "readiness"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_generate_python_client(self):
        request = pb.GenerateRequest(model=GENERATOR, items=[
            pb.GenerateItem(class_id=207, seed=11, truncation=0.4),
            pb.GenerateItem(class_weights=pb.ClassWeights(weights=[
                pb.ClassWeight(class_id=980, weight=0.5), pb.ClassWeight(class_id=1, weight=0.5)]),
                seed=12)])
        reply = self.stub.Generate(request, timeout=120)
        self.assertEqual(len(reply.images), 2)
        self.assertEqual(reply.images[0].format, pb.IMAGE_FORMAT_PNG)
        self.assertEqual(reply.images[0].data[:4], b"\x89PNG")
        self.assertEqual((reply.images[0].height, reply.images[0].width), (128, 128))
        self.assertEqual(reply.images[0].seed, 11)
        self.assertEqual(len(reply.images[0].z), 128)
        # Deterministic per (class, seed); alone or in another batch the same to float rounding
        # (BLAS blocking follows the batch shape): at most one 8-bit level on a few pixels.
        raw_items = [pb.GenerateItem(class_id=207, seed=11, truncation=0.4)]
        alone = self.stub.Generate(pb.GenerateRequest(
            model=GENERATOR, format=pb.IMAGE_FORMAT_RAW_RGB8, items=raw_items), timeout=120)
        batched = self.stub.Generate(pb.GenerateRequest(
            model=GENERATOR, format=pb.IMAGE_FORMAT_RAW_RGB8,
            items=raw_items + list(request.items[1:])), timeout=120)
        a, b = alone.images[0].data, batched.images[0].data
        diffs = [abs(x - y) for x, y in zip(a, b) if x != y]
        self.assertEqual(len(a), len(b))
        self.assertLessEqual(max(diffs, default=0), 1)
        self.assertLessEqual(len(diffs), len(a) // 100)
        raw = self.stub.Generate(pb.GenerateRequest(
            model=GENERATOR, format=pb.IMAGE_FORMAT_RAW_RGB8,
            attention=pb.ATTENTION_MODE_EXACT, items=[pb.GenerateItem(class_id=3, seed=1)]),
            timeout=120)
        self.assertEqual(raw.attention, pb.ATTENTION_MODE_EXACT)
        self.assertEqual(len(raw.images[0].data), 128 * 128 * 3)
        z = [0.1] * 128
        explicit = self.stub.Generate(pb.GenerateRequest(model=GENERATOR, items=[
            pb.GenerateItem(class_id=3, z=pb.Latent(values=z))]), timeout=120)
        self.assertEqual(len(explicit.images[0].z), 128)
        self.assertAlmostEqual(explicit.images[0].z[0], 0.1, places=6)

    def test_override_refused_where_not_allowed(self):
        self.assertEqual(code_of(lambda: self.classify(
            model=EXACT_ONLY, attention=pb.ATTENTION_MODE_KDEFORMER)),
            grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.classify(model=EXACT_ONLY).attention, pb.ATTENTION_MODE_EXACT)

    def test_bad_inputs_get_their_codes_and_the_server_keeps_serving(self):
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        cases = {
            "garbage image": lambda: self.classify(images=[b"not an image"]),
            "truncated jpeg": lambda: self.classify(images=[read(TRUNCATED)]),
            "empty image": lambda: self.classify(images=[b""]),
            "no images": lambda: self.classify(images=[]),
            "top_k too large": lambda: self.classify(top_k=5000),
            "too many items": lambda: self.classify(images=[read(DOG)] * 9),
            "raw image wrong size": lambda: self.stub.Classify(pb.ClassifyRequest(
                model=CLASSIFIER, images=[pb.ImageInput(raw=pb.RawImage(
                    height=10, width=10, channels=3, data=b"\0" * 7))]), timeout=30),
            "class id out of range": lambda: self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, items=[pb.GenerateItem(class_id=1000, seed=1)]), timeout=30),
            "truncation out of range": lambda: self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, items=[pb.GenerateItem(class_id=1, truncation=1.5)]), timeout=30),
            "truncation nan": lambda: self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, items=[pb.GenerateItem(class_id=1, truncation=math.nan)]),
                timeout=30),
            "z wrong length": lambda: self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, items=[pb.GenerateItem(class_id=1, z=pb.Latent(values=[0.0]))]),
                timeout=30),
            "z not finite": lambda: self.stub.Generate(pb.GenerateRequest(
                model=GENERATOR, items=[pb.GenerateItem(class_id=1, z=pb.Latent(
                    values=[math.inf] * 128))]), timeout=30),
            "classify a generator": lambda: self.classify(model=GENERATOR),
        }
        for name, call in cases.items():
            with self.subTest(name):
                self.assertEqual(code_of(call), invalid)
        self.assertEqual(code_of(lambda: self.classify(model="resnet")), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.server.proc.poll(), None)
        self.assertEqual(len(self.classify().results), 1)

    def test_concurrent_calls_are_batched(self):
        before = metric_value(self.server.metrics(), "kdeserve_batch_size_count", model=CLASSIFIER) or 0
        ones_before = metric_value(self.server.metrics(), "kdeserve_batch_size_bucket",
                                   model=CLASSIFIER, le="1") or 0
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda _: self.classify(top_k=1, timeout=300), range(32)))
        self.assertEqual(len(replies), 32)
        self.assertTrue(all(len(r.results) == 1 for r in replies))
        self.assertGreater(max(r.timing.batch_size for r in replies), 1)
        text = self.server.metrics()
        batches = metric_value(text, "kdeserve_batch_size_count", model=CLASSIFIER) - before
        singles = metric_value(text, "kdeserve_batch_size_bucket", model=CLASSIFIER, le="1") - ones_before
        self.assertLess(batches, 32)
        self.assertLess(singles, batches, "some batches must hold more than one request")

    def test_deadline_passing_behind_another_models_batch_is_not_computed(self):
        # One compute thread serves every model: a Classify that waits there behind a Generate
        # batch until its deadline passes is answered DEADLINE_EXCEEDED and never computed.
        def counters():
            text = self.server.metrics()
            return (metric_value(text, "kdeserve_items_total", model=CLASSIFIER) or 0,
                    metric_value(text, "kdeserve_rejected_total", model=CLASSIFIER,
                                 reason="deadline") or 0)
        items_before, dropped_before = counters()
        # Timings relative to one 4-image Generate batch (measured here, so they hold on fast
        # and slow machines): the Classify arrives at 30% of the busy batch with a deadline of
        # another 30%, so it expires while the batch still holds the compute thread.
        request = pb.GenerateRequest(
            model=GENERATOR, items=[pb.GenerateItem(class_id=i, seed=i) for i in range(4)])
        start = time.monotonic()
        self.stub.Generate(request, timeout=120)
        batch = time.monotonic() - start
        busy = self.stub.Generate.future(request, timeout=120)
        time.sleep(0.3 * batch)
        self.assertEqual(code_of(lambda: self.classify(timeout=0.3 * batch)),
                         grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(len(busy.result().images), 4)
        deadline = time.time() + 10
        while counters()[1] == dropped_before and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(counters(), (items_before, dropped_before + 1))

    def test_metrics_pass_promtool(self):
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        if not os.path.exists(promtool):
            self.skipTest("promtool not installed")
        out = subprocess.run([promtool, "check", "metrics"], input=self.server.metrics(),
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class OverloadTest(unittest.TestCase):
    """A tiny queue: every request is answered OK or RESOURCE_EXHAUSTED; deadlines that pass
    in the queue give DEADLINE_EXCEEDED."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server([model_yaml(CLASSIFIER, ["exact", "kdeformer"], "exact", 1, 0, 2, 1)])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def call(self, timeout=120):
        return code_of(lambda: self.server.stub.Classify(pb.ClassifyRequest(
            model=CLASSIFIER, top_k=1, images=[pb.ImageInput(encoded=read(DOG))]),
            timeout=timeout))

    def test_full_queue_answers_resource_exhausted(self):
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            codes = list(pool.map(lambda _: self.call(), range(24)))
        self.assertEqual(len(codes), 24)
        self.assertTrue(set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes)
        self.assertIn(grpc.StatusCode.OK, codes)
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        rejected = metric_value(self.server.metrics(), "kdeserve_rejected_total", model=CLASSIFIER)
        self.assertGreaterEqual(rejected or 0, codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED))

    def test_deadline_shorter_than_queue_wait(self):
        # Two slow calls occupy the worker and the queue; a third whose deadline is half of one
        # call's time (measured here, so it holds on fast and slow machines) expires queued.
        self.assertEqual(self.call(), grpc.StatusCode.OK)
        start = time.monotonic()
        self.assertEqual(self.call(), grpc.StatusCode.OK)
        one_call = time.monotonic() - start
        def started_batches():
            return metric_value(self.server.metrics(), "kdeserve_queue_duration_seconds_count",
                                model=CLASSIFIER) or 0
        batches = started_batches()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(self.call) for _ in range(2)]
            # Admitted requests hold their slots while they decode: wait until the first is
            # computing and the second queued, so one slot is free for the fast call.
            deadline = time.monotonic() + one_call
            while time.monotonic() < deadline and not (
                    started_batches() > batches and metric_value(
                        self.server.metrics(), "kdeserve_queue_depth", model=CLASSIFIER) == 1):
                time.sleep(0.005)
            fast = pool.submit(self.call, one_call / 2)
            self.assertEqual(fast.result(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertTrue(all(f.result() in (grpc.StatusCode.OK,
                                               grpc.StatusCode.RESOURCE_EXHAUSTED) for f in slow))
        self.assertEqual(self.call(), grpc.StatusCode.OK)


@unittest.skipUnless(SERVER and os.path.exists(SERVER), "KDESERVE_SERVER not built")
class ShutdownTest(unittest.TestCase):
    def test_sigterm_finishes_in_flight_calls_then_exits_0(self):
        server = Server([model_yaml(CLASSIFIER, ["exact"], "exact", 1, 0, 16, 1)], grace=30)
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(lambda: server.stub.Classify(pb.ClassifyRequest(
                    model=CLASSIFIER, top_k=1, images=[pb.ImageInput(encoded=read(DOG))]),
                    timeout=120)) for _ in range(4)]
                time.sleep(0.3)
                server.proc.send_signal(signal.SIGTERM)
                replies = [f.result() for f in futures]
            self.assertEqual(len(replies), 4)
            self.assertEqual(server.proc.wait(timeout=60), 0, server.logs())
        finally:
            server.stop()


@unittest.skipUnless(SERVER and os.path.exists(SERVER) and shutil.which("openssl"),
                     "KDESERVE_SERVER or openssl missing")
class TlsTest(unittest.TestCase):
    def test_tls_serves_trusted_clients_only(self):
        workdir = tempfile.mkdtemp(prefix="kdeserve-tls-")
        cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        server = Server([model_yaml(CLASSIFIER, ["exact"], "exact", 1, 0, 8, 1)], tls=(cert, key))
        try:
            reply = server.health.Check(health_pb2.HealthCheckRequest(service="readiness"))
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
            plain = grpc.insecure_channel(server.address)
            self.assertEqual(code_of(lambda: health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=5)), grpc.StatusCode.UNAVAILABLE)
            plain.close()
            out = subprocess.run([CLI, "--address", server.address, "--tls-ca", cert, "classify",
                                  "--model", CLASSIFIER, DOG],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("dog.png", out.stdout)
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)


@unittest.skipUnless(SERVER and os.path.exists(SERVER) and os.path.exists(PROMETHEUS),
                     "KDESERVE_SERVER or prometheus missing")
class PrometheusScrapeTest(unittest.TestCase):
    def test_prometheus_reads_a_counter_and_a_histogram(self):
        server = Server([model_yaml(CLASSIFIER, ["exact"], "exact", 4, 5, 16, 4)])
        workdir = tempfile.mkdtemp(prefix="kdeserve-prom-")
        web_port = free_port()
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: kdeserve
    static_configs:
      - targets: ["127.0.0.1:{server.metrics_port}"]
""")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                 f"--storage.tsdb.path={workdir}/data",
                                 f"--web.listen-address=127.0.0.1:{web_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(3):
                server.stub.Classify(pb.ClassifyRequest(
                    model=CLASSIFIER, top_k=1, images=[pb.ImageInput(encoded=read(DOG))]),
                    timeout=120)

            def query(expr):
                url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode(
                    {"query": expr})
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r)["data"]["result"]

            counter, histogram = [], []
            deadline = time.time() + 60
            while time.time() < deadline and not (counter and histogram):
                try:
                    counter = query(f'sum(kdeserve_requests_total{{model="{CLASSIFIER}",'
                                    f'rpc="Classify",code="OK"}})')
                    histogram = query(f'sum(kdeserve_request_duration_seconds_count'
                                      f'{{model="{CLASSIFIER}"}})')
                    counter = [r for r in counter if float(r["value"][1]) >= 3]
                    histogram = [r for r in histogram if float(r["value"][1]) >= 3]
                except OSError:
                    pass
                time.sleep(1)
            self.assertTrue(counter, "Prometheus never saw kdeserve_requests_total >= 3")
            self.assertTrue(histogram, "Prometheus never saw the request-duration histogram")
            quantile = query('histogram_quantile(0.5, sum by (le) '
                             '(kdeserve_request_duration_seconds_bucket))')
            self.assertTrue(quantile and float(quantile[0]["value"][1]) > 0)
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)
            server.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
