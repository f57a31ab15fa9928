#!/usr/bin/python3
"""/metrics keeps answering while stale connections hold the exporter's HTTP workers.

Why: the exporter (prometheus-cpp's Exposer over civetweb) serves one connection per worker
thread, and a worker waits request_timeout_ms for a request to arrive. With prometheus-cpp's
defaults (2 workers, 30 s) two idle TCP connections made /metrics silent for 30 s: Prometheus
and the queue-depth autoscaler went blind.

It starts the real binary on free loopback ports:
  1. With the built-in configuration: opens 4 idle TCP connections and 4 half-sent requests (a
     request line and part of a header, never finished) to the metrics port. While they stay
     open (checked: no EOF yet), GET /metrics answers within 1 s, repeatedly. Within
     metrics.request_timeout_ms (from --print-config) + 1.5 s of opening, the server has closed
     every one of them (an idle one without a word, a half-sent one with 400), and /metrics
     still answers.
  2. With metrics.http_threads: 3 and metrics.request_timeout_ms: 500: 3 idle connections hold
     every worker, so a GET waits in civetweb's queue (it is not refused) until the timeout
     frees a worker: it answers after 0.25–1.5 s. This shows both keys reach civetweb.

usage: metrics_exporter_test.py SERVER_BINARY
"""
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

IDLE, HALF_SENT = 4, 4
ANSWER_WITHIN = 1.0
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slo"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, config=None):
    port, mport = free_port(), free_port()
    args = [server, "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"]
    if config:
        args += ["--config", config]
    proc = subprocess.Popen(args)
    t0 = time.time()
    while True:
        assert proc.poll() is None, "server exited early"
        assert time.time() - t0 < 120, "/metrics not up within 120 s"
        try:
            text = scrape(mport, timeout=5)
            # Every model warmed up: no start-up work competes with the checks.
            if "kdeserve_model_ready" in text and not re.search(
                    r"^kdeserve_model_ready\{[^}]*\} 0", text, re.M):
                return proc, mport
        except OSError:
            pass
        time.sleep(0.2)


def scrape(mport, timeout):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=timeout) as r:
        return r.read().decode()


def timed_scrape(mport, timeout):
    t = time.monotonic()
    text = scrape(mport, timeout)
    assert "kdeserve_build_info" in text, text[:200]
    return time.monotonic() - t


def open_stale(mport, idle, half_sent):
    conns = []
    for i in range(idle + half_sent):
        s = socket.create_connection(("127.0.0.1", mport))
        if i >= idle:
            s.sendall(HALF_REQUEST)
        conns.append(s)
    return conns


def is_open(s):
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except (BlockingIOError, InterruptedError):
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


def wait_closed(s, deadline):
    """Reads until EOF or reset before `deadline` (monotonic); returns what was received."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"still open at the deadline (received {data[:80]!r})"
        s.settimeout(left)
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return data
        except socket.timeout:
            continue
        if not chunk:
            return data
        data += chunk


def effective(server, key, default):
    text = subprocess.run([server, "--print-config"], capture_output=True, text=True,
                          check=True).stdout
    block = re.search(r"^metrics:\n((?:  .*\n?)*)", text, re.M)
    found = block and re.search(rf"^  {key}: (\d+)", block.group(1), re.M)
    return int(found.group(1)) if found else default


def built_in(server):
    # Without a metrics block (before the fix): prometheus-cpp's 2 workers, civetweb's 30 s.
    threads = effective(server, "http_threads", 2)
    timeout_s = effective(server, "request_timeout_ms", 30000) / 1000
    print(f"built-in: {threads} HTTP workers, request timeout {timeout_s} s")
    proc, mport = start(server)
    try:
        base = timed_scrape(mport, timeout=10)
        opened = time.monotonic()
        stale = open_stale(mport, IDLE, HALF_SENT)
        time.sleep(0.1)  # the server has accepted them
        latencies = []
        while time.monotonic() - opened < min(0.6 * timeout_s, 5.0) or len(latencies) < 3:
            try:
                latencies.append(timed_scrape(mport, timeout=ANSWER_WITHIN))
            except OSError as e:
                raise AssertionError(
                    f"GET /metrics did not answer within {ANSWER_WITHIN} s while {IDLE} idle "
                    f"and {HALF_SENT} half-sent connections were open ({e})") from None
            time.sleep(0.1)
        still = sum(is_open(s) for s in stale)
        assert still == len(stale), f"only {still} of {len(stale)} stale connections still open"
        print(f"/metrics with {len(stale)} stale connections open: {len(latencies)} GETs, "
              f"max {max(latencies) * 1000:.1f} ms (alone: {base * 1000:.1f} ms)")
        deadline = opened + timeout_s + 1.5
        for i, s in enumerate(stale):
            data = wait_closed(s, deadline)
            if i < IDLE:
                assert data == b"", f"idle connection {i} got {data[:80]!r}"
            else:
                assert data == b"" or re.match(rb"HTTP/1\.[01] 400 ", data), data[:80]
            s.close()
        print(f"stale connections closed {time.monotonic() - opened:.2f} s after opening")
        timed_scrape(mport, timeout=ANSWER_WITHIN)
    finally:
        proc.kill()
        proc.wait()


def configured(server):
    text = subprocess.run([server, "--print-config"], capture_output=True, text=True,
                          check=True).stdout
    text = re.sub(r"^metrics:\n(?:  .*\n?)*", "", text, flags=re.M)
    text += "\nmetrics:\n  http_threads: 3\n  request_timeout_ms: 500\n"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    proc, mport = start(server, f.name)
    try:
        stale = open_stale(mport, 3, 0)
        time.sleep(0.05)
        latency = timed_scrape(mport, timeout=10)
        print(f"3 workers held by 3 idle connections, 500 ms timeout: GET answered after "
              f"{latency:.2f} s")
        assert 0.25 <= latency <= 1.5, latency
        for s in stale:
            s.close()
    finally:
        proc.kill()
        proc.wait()


def main():
    server = sys.argv[1]
    built_in(server)
    configured(server)
    print("metrics exporter test passed")


if __name__ == "__main__":
    main()
