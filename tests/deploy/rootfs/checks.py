"""Running the built image the way a container would, and the checker's report."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

from . import T0, log
from .chroot import in_root, lookup_user, readonly_view, run

HEALTH_TIMEOUT_S = 180
# A model config line that puts a model on a CUDA device (deploy/config/server-gpu.yaml).
_CUDA_DEVICE = re.compile(r"^(\s*(?:-\s*)?device:\s*)([\"']?)cuda(?::\d+)?\2\s*$", re.M)


class Report:
    """Check results (name, ok, detail) plus the measurements the summary prints."""

    def __init__(self):
        self.items = []
        self.durations = {}
        self.size, self.packages, self.biggest, self.version_note = "?", "?", "", ""

    def add(self, name, ok, detail=""):
        """Records and logs one check; returns whether it passed."""
        self.items.append((name, bool(ok), detail))
        log(f"{'PASS' if ok else 'FAIL'}: {name}{' - ' + detail if detail else ''}")
        return ok

    @property
    def ok(self):
        """True when there is at least one check and all passed."""
        return bool(self.items) and all(ok for _, ok, _ in self.items)

    def print_summary(self, timings):
        """The closing summary: stage `timings` (None when no stage ran), durations, checks."""
        print("\n==== dockerfile_rootfs summary ====")
        if timings is not None:
            for what, secs in timings:
                print(f"  {what:<45} {secs:7.1f}s")
            for what, secs in self.durations.items():
                print(f"  {what:<45} " + (f"{secs:7.1f}s" if secs is not None else "    n/a"))
            print(f"  runtime rootfs size (du -sh)                  {self.size}")
            print(f"  packages installed (dpkg -l | grep ^ii)       {self.packages}")
            if self.biggest:
                print(f"  biggest packages (Installed-Size)             {self.biggest}")
            if self.version_note:
                print(f"  host build vs image libraries                 {self.version_note}")
        for name, ok, detail in self.items:
            first = detail.split("\n")[0] if detail else ""
            print(f"  {'PASS' if ok else 'FAIL'}  {name}{': ' + first[:150] if first else ''}")
        print(f"  total {time.monotonic() - T0:.0f}s: {'OK' if self.ok else 'FAILED'}")


class Container:
    """Commands in the image's root filesystem `root` as uid:gid (coreutils chroot --userspec),
    in the stage's WORKDIR, with its ENV (plus HOME and HOSTNAME)."""

    def __init__(self, root, st, uid, gid, home):
        self.root, self.st, self.uid, self.gid = root, st, uid, gid
        self.env = dict(st.env)
        self.env.setdefault("HOME", home)
        self.env.setdefault("HOSTNAME", "kdeserve-check")

    def argv(self, argv):
        """The host command line that runs `argv` in the container."""
        cmd = ["chroot", f"--userspec={self.uid}:{self.gid}", self.root]
        if self.st.workdir != "/":
            cmd += ["/usr/bin/env", "-C", self.st.workdir]
        return cmd + argv

    def run(self, argv, timeout):
        """Runs `argv` in the container, capturing its output as text."""
        return subprocess.run(self.argv(argv), env=self.env, capture_output=True, text=True,
                              timeout=timeout)


def free_port():
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_duration(s):
    """Docker duration ("1m30s", "500ms") in seconds."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|s|m|h)", s):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def compare_versions(pkgs, root):
    """--stage runtime runs binaries built on the host: are the image's libraries the ones they
    were linked against? (A newer point release in the image is normally fine; this is a note.)"""
    def versions(prefix):
        r = subprocess.run(prefix + ["dpkg-query", "-W", "-f", "${Package} ${Version}\n"] + pkgs,
                           capture_output=True, text=True)
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    host, image = versions([]), versions(["chroot", root])
    diff = [f"{p} host {host.get(p)} image {image.get(p)}" for p in pkgs
            if host.get(p) != image.get(p)]
    note = ("all %d the same versions" % len(pkgs)) if not diff else "DIFFER: " + "; ".join(diff)
    log(f"runtime packages, host vs image: {note}")
    return note


def _measure_image(report, root):
    du = run(["du", "-sh", "--one-file-system", root], capture_output=True, text=True)
    report.size = du.stdout.split()[0]
    dpkg = run(["chroot", root, "dpkg", "-l"], capture_output=True, text=True)
    report.packages = sum(1 for line in dpkg.stdout.splitlines() if line.startswith("ii"))
    sizes = run(["chroot", root, "dpkg-query", "-W", "-f", "${Installed-Size}\t${Package}\n"],
                capture_output=True, text=True).stdout.split("\n")
    sizes = sorted((int(s.split("\t")[0] or 0), s.split("\t")[1]) for s in sizes if "\t" in s)
    report.biggest = ", ".join(f"{n} {k // 1024} MiB" for k, n in reversed(sizes[-6:]))
    log(f"runtime rootfs: {report.size}, {report.packages} packages; biggest: {report.biggest}")


def gpu_visible():
    """Whether this machine has an NVIDIA device node (a container would get it with --gpus)."""
    return any(re.fullmatch(r"nvidia\d+", n) for n in os.listdir("/dev"))


def _config_path(entry):
    """The file after --config in the image's ENTRYPOINT+CMD, or None."""
    for i, a in enumerate(entry[:-1]):
        if a == "--config":
            return entry[i + 1]
    return None


@contextlib.contextmanager
def _bind_file(src, dst):
    """`docker run -v SRC:DST:ro` for one file: a read-only bind mount over DST."""
    run(["mount", "--bind", src, dst])
    try:
        run(["mount", "-o", "remount,bind,ro", dst])
        yield
    finally:
        if subprocess.run(["umount", dst]).returncode != 0:
            subprocess.run(["umount", "-l", dst])


def _check_cuda_refusal(report, ctr, entry):
    """The image's own config asks for a CUDA device this machine does not have: the server must
    refuse at start with the reason and a non-zero exit status, never a crash."""
    t = time.monotonic()
    try:
        r = ctr.run(entry, timeout=120)
    except subprocess.TimeoutExpired:
        report.add("default config (CUDA device) refused without a GPU", False,
                   "still running after 120 s")
        return
    report.durations["CUDA config: start -> refusal"] = time.monotonic() - t
    out = (r.stdout + r.stderr).strip()
    crashed = any(m in out for m in ("Segmentation", "terminate called", "core dumped", "Aborted"))
    reason = [line.strip() for line in out.splitlines() if "requested, but" in line]
    ok = r.returncode > 0 and not crashed and reason and all("or use device: cpu" in line
                                                              for line in reason)
    report.add("default config (CUDA device) refused without a GPU", ok,
               f"exit {r.returncode} after {report.durations['CUDA config: start -> refusal']:.1f}s"
               f"; {reason[0] if reason else out[-600:]}")


def check_runtime(report, st, opts):
    """Starts the image built in `st` as its USER, PID 1 of a new PID namespace, on a read-only
    root with a tmpfs /tmp, and runs the HEALTHCHECK, /metrics, classify and SIGTERM checks.
    When the image's config puts models on a CUDA device and this machine has no GPU, the
    image's own start must refuse with the reason, and the checks run with that config's CPU
    version mounted over it (device: cuda[:N] -> cpu), as a user would run it on CPU."""
    root = st.root
    uid, gid, home = lookup_user(root, st.user)
    report.add("USER is not root", uid != 0, f"USER {st.user} -> uid {uid} gid {gid}")
    entry = st.entrypoint + st.cmd
    report.add("ENTRYPOINT+CMD set", bool(entry), " ".join(entry))
    if not entry:
        return
    logs = os.path.join(opts.workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    _measure_image(report, root)  # before anything runs in it

    config = _config_path(entry)
    config_text = ""
    if config and os.path.isfile(in_root(root, config)):
        with open(in_root(root, config)) as f:
            config_text = f.read()
    cpu_config = None
    if _CUDA_DEVICE.search(config_text) and not gpu_visible():
        cpu_config = os.path.join(logs, f"{opts.stage}-{os.path.basename(opts.dockerfile)}"
                                        "-cpu-config.yaml")
        with open(cpu_config, "w") as f:
            f.write(_CUDA_DEVICE.sub(r"\1cpu", config_text))
        os.chmod(cpu_config, 0o644)

    port, mport = free_port(), free_port()
    while mport == port:
        mport = free_port()
    view = root + "-ro"
    with contextlib.ExitStack() as stack:
        stack.enter_context(readonly_view(root, view))
        ctr = Container(view, st, uid, gid, home)
        if cpu_config:
            _check_cuda_refusal(report, ctr, entry)
            stack.enter_context(_bind_file(cpu_config, in_root(view, config)))
            report.add(f"CPU config mounted over {config}", True,
                       f"its device: cuda lines -> cpu ({cpu_config}), as `docker run -v "
                       f"cpu.yaml:{config}:ro`")
        # The effective configuration tells which port the HEALTHCHECK address refers to.
        pc = ctr.run(entry + ["--print-config"], timeout=60)
        m = re.search(r"^\s+listen:\s*(\S+):(\d+)\s*$", pc.stdout, re.M)
        if not report.add("ENTRYPOINT+CMD --print-config", pc.returncode == 0 and m,
                          f"exit {pc.returncode}; gRPC {m.group(1)}:{m.group(2)}" if m else
                          f"exit {pc.returncode}: {pc.stderr.strip()[-500:]}"):
            return
        grpc_default = m.group(2)
        argv = entry + ["--listen", f"127.0.0.1:{port}", "--metrics-listen",
                        f"127.0.0.1:{mport}"]
        server_log = os.path.join(logs, f"{opts.stage}-{os.path.basename(opts.dockerfile)}"
                                        "-server.log")
        log(f"start (PID 1 of a new PID namespace, read-only root, uid {uid}, log "
            f"{server_log}): {' '.join(argv)}")
        with open(server_log, "w") as logf:
            t_start = time.monotonic()
            proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--"]
                                    + ctr.argv(argv),
                                    env=ctr.env, stdout=logf, stderr=subprocess.STDOUT)
            try:
                server = _Server(proc, t_start, server_log, port, mport)
                _serve_checks(report, ctr, server, grpc_default, opts.shared_dir)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        written = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(view, "tmp")):
            for n in filenames + [d for d in dirnames if not os.listdir(os.path.join(dirpath, d))]:
                p = os.path.relpath(os.path.join(dirpath, n), view)
                if p != "tmp/dog.png":
                    written.append("/" + p)
        report.add("server runs on a read-only root filesystem", True,
                   "it left in the /tmp tmpfs: " + (", ".join(written) or "nothing"))


class _Server:
    def __init__(self, proc, t_start, log_path, port, mport):
        self.proc, self.t_start, self.log_path = proc, t_start, log_path
        self.port, self.mport = port, mport

    def tail(self):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-25:])

    def pid(self):
        """The server's host PID: the only child of the unshare process."""
        upid = self.proc.pid
        with contextlib.suppress(OSError):
            with open(f"/proc/{upid}/task/{upid}/children") as f:
                kids = f.read().split()
                if kids:
                    return int(kids[0])
        return None


def _wait_healthy(report, ctr, server, hc, argv):
    per_try = parse_duration(hc.get("timeout", "30s"))
    healthy, tries, last = None, 0, ""
    proc = server.proc
    while time.monotonic() - server.t_start < HEALTH_TIMEOUT_S:
        if proc.poll() is not None:
            break
        tries += 1
        try:
            r = ctr.run(argv, timeout=per_try)
            last = f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-200:]}"
            if r.returncode == 0:
                healthy = time.monotonic() - server.t_start
                break
        except subprocess.TimeoutExpired:
            last = f"timed out after {per_try}s"
        time.sleep(1)
    report.durations["server start -> HEALTHCHECK exit 0"] = healthy
    budget = parse_duration(hc.get("interval", "30s")) * int(hc.get("retries", "3")) \
        + parse_duration(hc.get("start-period", "0s"))
    if not report.add("HEALTHCHECK passes", healthy is not None,
                      f"after {healthy:.1f}s, {tries} tries (Docker would call the container "
                      f"unhealthy only after ~{budget:.0f}s)" if healthy is not None else
                      f"{tries} tries, last {last}; server "
                      + (f"exited {proc.returncode}" if proc.poll() is not None else "running")
                      + f"\n{server.tail()}"):
        return False
    report.add("HEALTHCHECK fits its interval*retries", healthy < budget,
               f"{healthy:.1f}s < {budget:.0f}s")
    return True


_DEBIAN_LIB_DIRS = ("/usr/lib/", "/lib/", "/usr/lib64/", "/lib64/")


def _report_mapped_libraries(report, ctr, server):
    """The shared libraries the serving process has mapped that no Debian package put there (the
    wheel's, under /opt), the ones the image copied under /opt that it has not loaded (those a
    GPU run loads, for the CUDA image on CPU), and its OpenMP runtime: exactly one libgomp."""
    pid = server.pid()
    try:
        with open(f"/proc/{pid}/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except (OSError, TypeError):
        report.add("libraries the server maps", False, f"cannot read /proc/{pid}/maps")
        return
    libs = set()
    for p in paths:
        if p.startswith(ctr.root + "/"):
            p = p[len(ctr.root):]
        if re.search(r"\.so(\.[0-9.]+)?$", os.path.basename(p)):
            libs.add(p)
    vendored = sorted(p for p in libs if not p.startswith(_DEBIAN_LIB_DIRS))
    shipped = set()
    for dirpath, _, filenames in os.walk(os.path.join(ctr.root, "opt")):
        for n in filenames:
            if re.search(r"\.so(\.[0-9.]+)?$", n):
                shipped.add(os.path.join(dirpath, n)[len(ctr.root):])
    unused = sorted(os.path.basename(p) for p in shipped - set(vendored))
    report.add("libraries the server maps from outside Debian's folders", bool(vendored),
               f"{len(vendored)}: " + ", ".join(vendored)
               + (f"; copied but not loaded here ({len(unused)}): " + ", ".join(unused)
                  if unused else "; every library copied under /opt is loaded"))
    gomp = sorted(p for p in libs if os.path.basename(p).startswith("libgomp"))
    report.add("one OpenMP runtime (libgomp) mapped", len(gomp) == 1, ", ".join(gomp) or "none")


def _serve_checks(report, ctr, server, grpc_default, shared_dir):
    # HEALTHCHECK, with its address pointed at our port.
    hc = ctr.st.healthcheck
    if not report.add("HEALTHCHECK present", hc is not None):
        return
    argv, adapted = [], False
    for a in hc["argv"]:
        if re.fullmatch(r"(.*):" + grpc_default, a):
            a, adapted = f"127.0.0.1:{server.port}", True
        argv.append(a)
    if not report.add("HEALTHCHECK address adapted", adapted, " ".join(argv)):
        return
    if not _wait_healthy(report, ctr, server, hc, argv):
        return
    _report_mapped_libraries(report, ctr, server)

    # /metrics from the host.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.mport}/metrics", timeout=10) as r:
            text = r.read().decode(errors="replace")
        ready = [line for line in text.splitlines() if line.startswith("kdeserve_model_ready")]
        report.add("/metrics has kdeserve_model_ready", bool(ready), "; ".join(ready))
    except OSError as e:
        report.add("/metrics has kdeserve_model_ready", False, str(e))

    # One Classify through the CLI inside the image.
    dog = os.path.join(shared_dir, "data/photos/t2t-vit/dog.png")
    if not os.path.exists(dog):
        report.add("classify through kdeserve-cli", False, f"{dog} is missing")
    else:
        shutil.copyfile(dog, os.path.join(ctr.root, "tmp/dog.png"))
        os.chmod(os.path.join(ctr.root, "tmp/dog.png"), 0o644)
        t = time.monotonic()
        r = ctr.run(["kdeserve-cli", "--address", f"127.0.0.1:{server.port}", "classify",
                     "--model", "t2t_vit_t_24", "/tmp/dog.png"], timeout=120)
        report.durations["classify (CLI, 1 image)"] = time.monotonic() - t
        out = (r.stdout + r.stderr).strip()
        report.add("classify through kdeserve-cli", r.returncode == 0 and out,
                   f"exit {r.returncode}\n{out[-1200:]}")

    # SIGTERM to PID 1 (the server), as `docker stop` sends it.
    pid = server.pid()
    if not report.add("server is PID 1's process", pid is not None and server.proc.poll() is None):
        return
    t = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        rc = server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    report.durations["SIGTERM -> exit"] = time.monotonic() - t
    report.add("SIGTERM: server exits 0", rc == 0,
               f"exit {rc} after {report.durations['SIGTERM -> exit']:.1f}s"
               + ("" if rc == 0 else "\n" + server.tail()))
