#!/usr/bin/python3
"""Soak test: the real kdeserve-server under valid and hostile traffic from several client
processes at once for KDESERVE_SOAK_SECONDS (default 180, at most 540), then these checks:

  server_alive         never exited during the soak; exits 0 on SIGTERM afterwards (a fatal
                       signal shows there); no sanitizer report, "terminate called" or glibc
                       heap/fortify abort message in its stdout/stderr
  health_latency       every grpc.health.v1 Check ("" and "readiness", every ~100 ms on a
                       channel of its own) answered SERVING in under 1 s
  metrics_latency      every /metrics GET (every second) answered in under 1 s
  rss_flat             VmRSS (sampled every second) flat after warm-up: see rss_flat()
  requests_match       for every (model, rpc, code): the calls the clients saw end with that code
                       == the increase of kdeserve_requests_total{model,rpc,code}, the label
                       being soak_traffic.expected_label()
  rejections_match     kdeserve_rejected_total: invalid / unavailable / queue_full equal the
                       clients' INVALID_ARGUMENT / UNAVAILABLE / RESOURCE_EXHAUSTED per model;
                       deadline / cancelled at most the clients' DEADLINE_EXCEEDED / CANCELLED
                       (a call that expires while computing is computed, not rejected)
  idle_after           kdeserve_inflight_requests and every queue depth back to 0 afterwards
  valid_calls_ok       valid calls (120 s deadlines) end OK or RESOURCE_EXHAUSTED (a full
                       queue), never INTERNAL: a hostile batch-mate must not fail them
  coverage             every kind of traffic ran at least once; the harness raised nothing

Prints the figures (requests by outcome, health latency p50/p99/max, RSS every 10 s) and writes
them as JSON to KDESERVE_SOAK_REPORT (default ./soak_report.json), the server's log beside it.
Exit status 0 only when every check passes. Environment: KDESERVE_SERVER (the binary),
KDESERVE_SHARED_DIR, KDESERVE_SOAK_SECONDS, KDESERVE_SOAK_SEED, PYTHONPATH with the generated
stubs (<build>/client/python). ctest runs it as `soak` (label slow)."""

import collections
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import soak_traffic as traffic  # noqa: E402
from soak_traffic import pb  # noqa: E402

SERVER = os.environ.get("KDESERVE_SERVER", "")
SHARED = os.environ.get("KDESERVE_SHARED_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared"))
SECONDS = float(os.environ.get("KDESERVE_SOAK_SECONDS", "180"))
MAX_SECONDS = 540  # start-up, warm-up and drain take the rest of the 10 minutes
SEED = int(os.environ.get("KDESERVE_SOAK_SEED", "0"))
REPORT = os.environ.get("KDESERVE_SOAK_REPORT", os.path.abspath("soak_report.json"))
MAX_MESSAGE_BYTES = 8 << 20
LATENCY_LIMIT = 1.0  # s, health checks and /metrics GETs
MIB = 1 << 20
SKIPPED = 77  # ctest SKIP_RETURN_CODE
# What a crashing or corrupted process prints itself (sanitizers, libstdc++, glibc's malloc and
# fortify checks); a fatal signal shows in the exit code.
FATAL_PATTERNS = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                            r"WARNING: ThreadSanitizer|runtime error: |terminate called|"
                            r"double free or corruption|free\(\): [a-z]|malloc\(\): [a-z]|"
                            r"stack smashing detected|buffer overflow detected")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_yaml(name, default, max_batch, delay_ms, queue, items):
    return (f"  - name: {name}\n    init_seed: 0\n    device: cpu\n"
            f"    default_attention: {default}\n    allowed_attention: [exact, kdeformer]\n"
            f"    batching: {{max_batch_size: {max_batch}, max_queue_delay_ms: {delay_ms}, "
            f"max_queue_length: {queue}, max_items_per_request: {items}}}\n")


class Server:
    """The kdeserve-server process: random weights as the integration tests configure them,
    max_message_bytes 8 MiB, stdout and stderr in files of their own."""

    def __init__(self, workdir):
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = os.path.join(workdir, "server.yaml")
        with open(self.config, "w") as f:
            f.write(f"server:\n  listen: {self.address}\n"
                    f"  metrics_listen: 127.0.0.1:{self.metrics_port}\n  threads: 2\n"
                    f"  max_message_bytes: {MAX_MESSAGE_BYTES}\n  shutdown_grace_seconds: 30\n"
                    "logging:\n  level: info\n  format: json\nmodels:\n" +
                    model_yaml("t2t_vit_t_14", "kdeformer", 8, 20, 64, 8) +
                    model_yaml("t2t_vit_7", "exact", 8, 10, 64, 8) +
                    # 50 ms to fill a batch: a hostile Generate and its batch-mate meet.
                    model_yaml(traffic.GENERATOR, "kdeformer", 4, 50, 16, 4))
        self.out_path = os.path.join(workdir, "server.stdout")
        self.err_path = os.path.join(workdir, "server.stderr")
        self.out, self.err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen([SERVER, "--config", self.config], stdout=self.out,
                                     stderr=self.err)

    def wait_ready(self, timeout=300):
        channel = grpc.insecure_channel(self.address)
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                       f"{self.tail()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(service="readiness"),
                                  timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
            raise RuntimeError("server not ready in time: " + self.tail())
        finally:
            channel.close()

    def rss(self):
        """VmRSS in bytes, or None once the process is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def scrape(self, timeout=30):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return parse_metrics(r.read().decode())

    def stop(self):
        """SIGTERM, then the exit code (None if it had to be killed)."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
        self.out.close()
        self.err.close()
        return code

    def tail(self):
        self.out.flush()
        self.err.flush()
        return "".join(open(p, errors="replace").read()[-3000:]
                       for p in (self.out_path, self.err_path))


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text → {(name, ((label, value), ...)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        out[(name, tuple(sorted(LABEL.findall(labels))))] = float(value)
    return out


def family(metrics, name, *keys):
    """{tuple of the `keys` label values: value} of one family."""
    out = collections.Counter()
    for (n, labels), v in metrics.items():
        if n == name:
            d = dict(labels)
            out[tuple(d.get(k, "") for k in keys)] += v
    return out


def quiescent_scrape(server, limit=180):
    """A scrape once the server is idle: nothing in flight, every queue empty, and
    requests_total unchanged over 2 s (a cancelled or expired call may still finish on the
    server after its client gave up). Returns (metrics, idle)."""
    deadline = time.time() + limit
    last = None
    while True:
        try:
            m = server.scrape()
        except OSError:
            if time.time() > deadline:
                return None, False
            time.sleep(2)
            continue
        idle = (sum(family(m, "kdeserve_inflight_requests").values()) == 0 and
                sum(family(m, "kdeserve_queue_depth").values()) == 0)
        counts = family(m, "kdeserve_requests_total", "model", "rpc", "code")
        if idle and counts == last:
            return m, True
        if time.time() > deadline:
            return m, False
        last = counts if idle else None
        time.sleep(2)


def warm_up(address):
    """Every valid call once (before the first scrape, so not counted), and the server's
    fastest time for a one-small-image Classify and a one-item Generate: the cancelled calls
    are cancelled within a quarter of it (soak_traffic.cancel_after_send)."""
    p = traffic.Payloads(SHARED, MAX_MESSAGE_BYTES, check=True)
    channel = grpc.insecure_channel(address, options=traffic.CHANNEL_OPTIONS)
    s = traffic.stubs(channel)
    fastest = {"Classify": float("inf"), "Generate": float("inf")}
    for _ in range(3):
        for model in traffic.CLASSIFIERS:
            for mode in traffic.MODES:
                start = time.monotonic()
                s["Classify"](pb.ClassifyRequest(model=model, attention=mode, images=[
                    pb.ImageInput(encoded=p.small)]), timeout=120)
                fastest["Classify"] = min(fastest["Classify"], time.monotonic() - start)
    for mode in traffic.MODES:
        start = time.monotonic()
        s["Generate"](pb.GenerateRequest(model=traffic.GENERATOR, attention=mode, items=[
            pb.GenerateItem(class_id=1, seed=1)]), timeout=120)
        fastest["Generate"] = min(fastest["Generate"], time.monotonic() - start)
    s["ListModels"](pb.ListModelsRequest(), timeout=30)
    s["GetModelInfo"](pb.GetModelInfoRequest(model=traffic.GENERATOR), timeout=30)
    channel.close()
    return {rpc: round(t, 4) for rpc, t in fastest.items()}


def percentile(values, q):
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def rss_flat(samples):
    """The RSS criterion on the soak's samples [(t, bytes)], one a second.

    The first third is warm-up: allocator arenas, gRPC and OpenCV buffers, LibTorch's caches
    and the batcher's queues grow to their working set while every kind of request is seen for
    the first time. After it, the floor of the last third (its 10th percentile) must stay
    within the floor of the second third × 1.10 + 32 MiB.

    Why floors, not medians: a burst of eight 6000×6000 JPEGs holds up to 8 × 103 MiB of
    decoded pixels for the ~10 s it takes, so a third's median says how much of it was spent in
    bursts (it moved by 160 MiB between thirds with no growth underneath), while the floor is
    what the server keeps between them, which is what a leak or retained fragmentation raises
    (by the same amount it would raise the median). 10 % absorbs glibc's fragmentation drift in
    a long-lived multi-threaded process, 32 MiB the granularity of its arenas (64 MiB heaps,
    partly touched). A leak of L MiB/s moves the floors apart by L × duration / 3: at 180 s
    (thirds 60 s apart) and a ~830 MiB server, anything above ~2 MiB/s fails (one leaked
    100 kB photo per call at 20 calls/s); at 540 s, above ~0.7 MiB/s. Medians and the maximum
    are reported beside it."""
    third = len(samples) // 3
    if third < 5:
        return False, {"reason": f"only {len(samples)} samples"}
    parts = [[r for _, r in samples[third * i:third * (i + 1) if i < 2 else None]]
             for i in range(3)]
    floor = [percentile(p, 10) for p in parts]
    limit = floor[1] * 1.10 + 32 * MIB
    mib = lambda v: round(v / MIB, 1)
    return floor[2] <= limit, {
        "p10_thirds_mib": [mib(f) for f in floor], "limit_mib": mib(limit),
        "median_thirds_mib": [mib(statistics.median(p)) for p in parts],
        "first_mib": mib(samples[0][1]), "max_mib": mib(max(r for _, r in samples))}


# A call that dies (deadline, cancel) before gRPC has read its message is counted under model
# "unknown": the server never learned which model it named (server/call_accounting.h). Whether a
# 1 ms call dies before or after that point is a race no client can see, so for these two codes
# the counts must agree per (rpc, code) over the model labels, as "*".
DEATH_CODES = ("CANCELLED", "DEADLINE_EXCEEDED")


def request_key(label, rpc, code):
    return ("*" if code in DEATH_CODES else label, rpc, code)


def compare_requests(calls, before, after):
    """Rows (model, rpc, code, client count, server increase) over every key either side saw.
    Calls whose expected label is None are refused inside gRPC's core before any server code
    sees them (above max_message_bytes): they must not be counted, and are left out here."""
    client = collections.Counter()
    for group, kind, label, rpc, code, n in calls:
        if label is not None:
            client[request_key(label, rpc, code)] += n
    server = collections.Counter()
    b = family(before, "kdeserve_requests_total", "model", "rpc", "code")
    for k, v in family(after, "kdeserve_requests_total", "model", "rpc", "code").items():
        server[request_key(*k)] += int(v - b.get(k, 0))
    keys = set(client) | {k for k, v in server.items() if v}
    return [(*k, client.get(k, 0), server.get(k, 0)) for k in sorted(keys)]


def compare_rejections(calls, before, after):
    """Rows (model, reason, rule, client figure, server increase, ok)."""
    client = collections.Counter()
    for group, kind, label, rpc, code, n in calls:
        if label is not None:
            client[(label, code)] += n
    b = family(before, "kdeserve_rejected_total", "model", "reason")
    a = family(after, "kdeserve_rejected_total", "model", "reason")
    labels = {label for label, _ in client} | {m for m, _ in a}
    rules = [("invalid", "INVALID_ARGUMENT", "=="), ("unavailable", "UNAVAILABLE", "=="),
             ("queue_full", "RESOURCE_EXHAUSTED", "=="), ("deadline", "DEADLINE_EXCEEDED", "<="),
             ("cancelled", "CANCELLED", "<=")]
    rows = []
    for label in sorted(labels):
        for reason, code, rule in rules:
            if reason == "queue_full" and label not in traffic.HOSTED:
                continue  # RESOURCE_EXHAUSTED without a model is a too-large message
            seen = client.get((label, code), 0)
            reasons = [reason, "queue_bytes_full"] if reason == "queue_full" else [reason]
            delta = sum(int(a.get((label, r), 0) - b.get((label, r), 0)) for r in reasons)
            if seen or delta:
                ok = delta == seen if rule == "==" else delta <= seen
                rows.append((label, reason, f"{rule} {code}", seen, delta, ok))
    return rows


def latency_summary(values):
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": round(1000 * percentile(values, 50), 1),
            "p99_ms": round(1000 * percentile(values, 99), 1),
            "max_ms": round(1000 * max(values), 1)}


def run_soak(workdir):
    server = Server(workdir)
    report = {"seconds": SECONDS, "seed": SEED, "max_message_bytes": MAX_MESSAGE_BYTES}
    checks = {}
    try:
        server.wait_ready()
        report["fastest_s"] = warm_up(server.address)
        before, _ = quiescent_scrape(server)
        if before is None:
            raise RuntimeError("cannot scrape /metrics before the soak: " + server.tail())
        ctx = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
        stop = ctx.Event()
        outs = {r: os.path.join(workdir, r + ".json") for r in ("prober", "valid", "hostile")}
        procs = [ctx.Process(target=traffic.prober,
                             args=(server.address, server.metrics_port, stop, outs["prober"]))]
        for i, role in enumerate(("valid", "hostile")):
            procs.append(ctx.Process(target=traffic.clients, args=(
                role, server.address, server.metrics_port, SHARED, MAX_MESSAGE_BYTES,
                SEED * 10 + i + 1, report["fastest_s"], stop, outs[role])))
        for proc in procs:
            proc.start()
        t0 = time.monotonic()
        rss, died_at = [], None
        while time.monotonic() - t0 < SECONDS:
            value = server.rss()
            if server.proc.poll() is not None or value is None:
                died_at = round(time.monotonic() - t0, 1)
                break
            rss.append((round(time.monotonic() - t0, 1), value))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        stop.set()
        for proc in procs:
            proc.join(timeout=traffic.VALID_TIMEOUT + 60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        results = {}
        for role, path in outs.items():
            if os.path.exists(path):
                with open(path) as f:
                    results[role] = json.load(f)
        alive = server.proc.poll() is None
        after, idle = quiescent_scrape(server) if alive else (None, False)
        scraped = after is not None
        after = after if scraped else before
    finally:
        exit_code = server.stop()
        with open(os.path.splitext(REPORT)[0] + "_server.log", "wb") as log:
            for path in (server.out_path, server.err_path):
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, log)
    logs = open(server.out_path, errors="replace").read() + open(
        server.err_path, errors="replace").read()
    fatal = sorted(set(FATAL_PATTERNS.findall(logs)))
    checks["server_alive"] = (alive and exit_code == 0 and not fatal,
                              f"died during soak at {died_at} s" if died_at is not None else
                              f"exit code after SIGTERM {exit_code}; fatal output {fatal}")
    harness_errors = [e for r in results.values() for e in r.get("errors", [])]
    missing = sorted(set(outs) - set(results))
    calls = [tuple(c) for role in ("valid", "hostile") for c in results.get(role, {}).get(
        "calls", [])]

    # Outcomes as the clients saw them, by traffic kind.
    by_kind = collections.Counter()
    for group, kind, label, rpc, code, n in calls:
        by_kind[(group, kind, rpc, code)] += n
    report["requests_by_outcome"] = [[*k, n] for k, n in sorted(by_kind.items())]
    kinds = {(g, k) for g, k, _, _ in by_kind}
    expected_kinds = {("valid", k) for k in ("classify", "generate", "list_models", "model_info",
                                             "generate_batch_mate")}
    expected_kinds |= {("hostile", k) for k in (
        "garbage_image", "generate_z_1e30", "generate_weights_overflow_float", "deadline_1ms",
        "cancel_after_send", "not_protobuf", "above_max_message_bytes", "unknown_model",
        "model_name_10kB", "burst8_jpeg_sof_6000x6000", *traffic.HOSTILE_IMAGE_KINDS)}
    uncovered = sorted("/".join(k) for k in expected_kinds - kinds)
    checks["coverage"] = (not uncovered and not harness_errors and not missing,
                          f"never ran: {uncovered}; missing results: {missing}; harness errors: "
                          f"{[e.splitlines()[-1] for e in harness_errors]}")
    report["harness_errors"] = harness_errors
    report["error_details"] = {k: v for role in ("valid", "hostile")
                               for k, v in sorted(results.get(role, {}).get("details", {}).items())}
    report["metrics_port_connections"] = results.get("hostile", {}).get(
        "metrics_port_connections", {})

    rows = compare_requests(calls, before, after) if "valid" in results else []
    report["requests_total"] = [list(r) for r in rows]
    # gRPC's core drops a call whose deadline passes before it has read the message without
    # publishing it to any server code (server/call_accounting.h): such 1 ms calls cannot be
    # counted, so DEADLINE_EXCEEDED may only fall short, by the figure reported.
    bad = [r for r in rows if not (r[3] == r[4] or (r[2] == "DEADLINE_EXCEEDED" and r[4] <= r[3]))]
    report["deadline_calls_unseen_by_the_server"] = sum(
        r[3] - r[4] for r in rows if r[2] == "DEADLINE_EXCEEDED")
    checks["requests_match"] = (bool(rows) and not bad and scraped,
                                f"{len(bad)} of {len(rows)} series differ (model, rpc, code, "
                                f"client, server): {bad}")
    rej = compare_rejections(calls, before, after) if "valid" in results else []
    report["rejected_total"] = [list(r) for r in rej]
    checks["rejections_match"] = (bool(rej) and all(r[5] for r in rej) and scraped,
                                  f"differ: {[r for r in rej if not r[5]]}")
    checks["idle_after"] = (idle, "inflight and queue depths 0 afterwards" if idle else
                            "inflight_requests or a queue depth never returned to 0")
    valid_bad = {k: n for k, n in by_kind.items() if k[0] == "valid" and k[3] not in (
        "OK", "RESOURCE_EXHAUSTED")}
    checks["valid_calls_ok"] = (not valid_bad and any(
        k[0] == "valid" and k[3] == "OK" for k in by_kind),
        f"valid calls that failed (group, kind, rpc, code): {valid_bad}")

    probes = results.get("prober", {})
    health = probes.get("health", [])
    report["health"] = {}
    for service in ("", "readiness"):
        rows_s = [h for h in health if h[1] == service]
        summary = latency_summary([h[2] for h in rows_s])
        summary["outcomes"] = dict(collections.Counter(h[3] for h in rows_s))
        report["health"][service or '""'] = summary
    slow = [h for h in health if h[2] >= LATENCY_LIMIT or h[3] != "SERVING"]
    report["health"]["slowest"] = sorted(health, key=lambda h: -h[2])[:5]
    checks["health_latency"] = (bool(health) and not slow,
                                f"{len(slow)} of {len(health)} checks slow (≥ {LATENCY_LIMIT} s) "
                                f"or not SERVING; slowest (t, service, s, outcome): "
                                f"{report['health']['slowest']}")
    scrapes = probes.get("scrapes", [])
    report["metrics_scrape"] = latency_summary([s[1] for s in scrapes])
    report["metrics_scrape"]["outcomes"] = dict(collections.Counter(s[2] for s in scrapes))
    slow = [s for s in scrapes if s[1] >= LATENCY_LIMIT or s[2] != "OK"]
    checks["metrics_latency"] = (bool(scrapes) and not slow,
                                 f"{len(slow)} of {len(scrapes)} GETs slow or failed; slowest "
                                 f"(t, s, outcome): {sorted(scrapes, key=lambda s: -s[1])[:5]}")

    ok, detail = rss_flat(rss)
    report["rss"] = {"criterion": detail,
                     "every_10s_mib": [[t, round(r / MIB, 1)] for t, r in rss[::10]],
                     "every_1s_mib": [[t, round(r / MIB, 1)] for t, r in rss]}
    checks["rss_flat"] = (ok, json.dumps(detail))
    report["checks"] = {k: {"ok": bool(v[0]), "detail": v[1]} for k, v in checks.items()}
    return report


def print_report(report):
    print(f"\n== soak: {report['seconds']:.0f} s, seed {report['seed']}, fastest warm calls "
          f"{report.get('fastest_s')}")
    # First, in short: a CI log that keeps only the start of a failing test's output shows why.
    print("checks: " + ", ".join(f"{name} {'PASS' if c['ok'] else 'FAIL'}"
                                 for name, c in report["checks"].items()))
    for name, c in report["checks"].items():
        if not c["ok"]:
            print(f"  FAIL  {name}: {c['detail'][:600]}")
    print("\nrequests by outcome (as the clients saw them):")
    print(f"  {'group':8} {'kind':34} {'rpc':13} {'code':19} {'count':>6}")
    for group, kind, rpc, code, n in report["requests_by_outcome"]:
        print(f"  {group:8} {kind:34} {rpc:13} {code:19} {n:6}")
    print("\nkdeserve_requests_total: client count vs server increase:")
    for model, rpc, code, seen, delta in report["requests_total"]:
        mark = "" if seen == delta else "   <-- differs"
        shown = model[:20] or '""'
        print(f"  {shown:20} {rpc:13} {code:19} {seen:6} {delta:6}{mark}")
    print("\nkdeserve_rejected_total (model, reason, rule, client, server):")
    for model, reason, rule, seen, delta, ok in report["rejected_total"]:
        print(f"  {model[:20]:20} {reason:12} {rule:22} {seen:6} {delta:6}"
              f"{'' if ok else '   <-- fails'}")
    print("\nfirst error message per (group, kind, rpc, code):")
    for key, text in report["error_details"].items():
        print(f"  {key}: {text[:160]!r}")
    print("\nhealth Check latency:", {k: v for k, v in report["health"].items() if k != "slowest"})
    print("/metrics GET latency:", report["metrics_scrape"])
    print("metrics-port connections held:", report["metrics_port_connections"])
    print("RSS (MiB) every 10 s:", " ".join(f"{t:.0f}s:{r}" for t, r in
                                           report["rss"]["every_10s_mib"]))
    print("RSS criterion:", report["rss"]["criterion"])
    print("\nchecks:")
    for name, c in report["checks"].items():
        print(f"  {'PASS' if c['ok'] else 'FAIL'}  {name}: {c['detail'][:1500]}")


def main():
    if not (SERVER and os.path.exists(SERVER)):
        print(f"soak: KDESERVE_SERVER not built ({SERVER!r}); skipping")
        return SKIPPED
    if not os.path.isdir(os.path.join(SHARED, "data/photos")):
        print(f"soak: missing shared photos in {SHARED}/data/photos; skipping")
        return SKIPPED
    if not 0 < SECONDS <= MAX_SECONDS:
        print(f"soak: KDESERVE_SOAK_SECONDS must be in (0, {MAX_SECONDS}], got {SECONDS}")
        return 2
    workdir = tempfile.mkdtemp(prefix="kdeserve-soak-")
    try:
        report = run_soak(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=1)
    print_report(report)
    print(f"\nreport: {REPORT}")
    return 0 if all(c["ok"] for c in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
