#!/usr/bin/python3
"""Executes the stages of Dockerfile or Dockerfile.cuda in debootstrap'ed Debian 12 root filesystems.

Machines without a Docker engine cannot build the images; this checker runs a Dockerfile's
instructions itself, in chroots, and then starts the image's ENTRYPOINT+CMD the way a container
would, to prove that the runtime image really works:

  * when the image's config (the file after --config in its CMD) puts models on a CUDA device
    and this machine has no GPU (no /dev/nvidiaN; the CUDA image here), the image's own start
    must refuse with the reason (a non-zero exit status naming the device, not a crash); the
    checks below then run with that config's CPU version (device: cuda[:N] -> cpu) mounted
    read-only over it, as `docker run -v cpu.yaml:/etc/kdeserve/server.yaml:ro` would;

  * the server starts as the Dockerfile's USER, as PID 1 of its own PID namespace (so SIGTERM
    handling is what it is in a container), on a read-only view of the image's root filesystem
    with a tmpfs on /tmp (`docker run --read-only --tmpfs /tmp`), on free loopback ports;
  * the HEALTHCHECK command (its address adapted to the port used) runs inside the chroot as the
    USER until it exits 0 (at most 180 s);
  * it reports the libraries the serving process maps from outside Debian's folders (the
    wheel's, under /opt), those copied under /opt it has not loaded, and checks that it maps
    exactly one libgomp;
  * GET /metrics from the host must contain `kdeserve_model_ready`;
  * one Classify through the in-image CLI (`kdeserve-cli classify --model t2t_vit_t_24`) with
    $KDESERVE_SHARED_DIR/data/photos/t2t-vit/dog.png (default: ../shared next to the repo)
    must succeed;
  * SIGTERM must make the server exit 0;
  * it reports the image's size (du -sh of the runtime root filesystem), its package count
    (dpkg -l | grep ^ii | wc -l) and what the server left in /tmp.

Usage (root; Debian with debootstrap, util-linux and network access to deb.debian.org; run as
another user it exits 77, ctest's skip code):

  /usr/bin/python3 tests/deploy/dockerfile_rootfs.py [--stage runtime|all] [--keep]
                   [--build-dir DIR] [--venv DIR] [--workdir DIR] [--dockerfile FILE]
                   [--build-arg NAME=VALUE]...

  --stage runtime  (default; ~1 min, plus ~1 min of debootstrap on the first run) does not
                   run the build stage: it stands in for it with a directory whose /src is
                   the build context (the checkout, filtered by .dockerignore) plus the
                   host's build outputs (the stage's build/X comes from --build-dir: its
                   server/kdeserve-server and client/kdeserve-cli; build them first, e.g.
                   `bash scripts/build.sh kdeserve-server kdeserve-cli`); the commands that
                   follow scripts/build.sh in the build stage's RUN (runtime_packages.sh >
                   build/runtime-packages.txt, strip, patchelf) run on the host in that
                   directory, and the wheel libraries the runtime stage copies from the build
                   stage's venv come from the host venv (--venv). Then the runtime stage runs
                   for real.
  --stage all      also runs the build stage in its own chroot: install_deps.sh --build and the
                   full compile (8-10 minutes on 2 cores, and 1.3 GB (CPU) or 4.6 GB (CUDA) of
                   wheels; run it with nohup and a log).
  --build-dir DIR  the host build tree for --stage runtime (default: <repo>/build): a CPU build
                   for Dockerfile, a -DKDESERVE_WITH_CUDA=ON build for Dockerfile.cuda.
  --venv DIR       for --stage runtime, the host venv that stands in for the build stage's
                   $KDESERVE_VENV (the folder its ENV names, e.g. /opt/kdeserve/venv): the wheel
                   libraries the runtime stage copies from below it come from DIR, and the host
                   commands after scripts/build.sh run with KDESERVE_VENV=DIR. Default: the
                   KDESERVE_VENV in --build-dir's CMakeCache.txt (the venv it was built against),
                   else $KDESERVE_VENV, else <repo>/.venv.
  --keep           keep the stage root filesystems (printed at the end) instead of removing them.
  --workdir DIR    default /tmp/kdeserve-rootfs. It caches the pristine output of
                   `debootstrap --variant=minbase bookworm DIR http://deb.debian.org/debian` as
                   base-bookworm-minbase.tar (delete it to refresh); stages live in
                   DIR/stages/<Dockerfile>-<mode>-<stage>.

FROM debian:12-slim / debian:12 (also bookworm[-slim]) is emulated by that tarball plus what the
official images add: deb822 sources for bookworm, bookworm-updates and bookworm-security, the
docker-* apt settings, empty apt lists and, for -slim, the dpkg path excludes (docs, man pages,
locales) with those files removed. RUN executes `/bin/sh -c` chrooted, with the stage's ENV,
WORKDIR and USER, /proc, /dev (rbind, rslave) and /sys (read-only) mounted and the host's
/etc/resolv.conf copied in for its duration (a policy-rc.d keeps maintainer scripts from starting
daemons) and, when the host sets PIP_CERT (a network that re-signs TLS), that CA bundle as the
RUN's PIP_CERT, so that pip reaches PyPI from the chroot as it does on the host; COPY honours .dockerignore (moby's pattern rules). Instructions understood: FROM [AS],
ARG, ENV, WORKDIR, COPY [--from] [--chown] [--chmod], RUN (shell or exec form), LABEL, USER,
EXPOSE, VOLUME, HEALTHCHECK, ENTRYPOINT, CMD; anything else (SHELL, ADD, ONBUILD, RUN --mount, a
base image other than Debian 12, ...) fails loudly. The code lives in the rootfs/ package next
to this script.

Exit status 0 only when every check passed (77: not root); a summary with measured durations
comes last.
"""

import argparse
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree (this runs as root)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rootfs import Failure, log
from rootfs.base import base_tarball
from rootfs.builder import Builder
from rootfs.checks import Report, check_runtime, compare_versions
from rootfs.chroot import in_root, safe_rmtree
from rootfs.dockerfile import parse_dockerfile, split_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77  # ctest SKIP_RETURN_CODE


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=["runtime", "all"], default="runtime")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--workdir", default="/tmp/kdeserve-rootfs")
    ap.add_argument("--dockerfile", default=os.path.join(REPO, "Dockerfile"))
    ap.add_argument("--build-arg", action="append", default=[])
    ap.add_argument("--venv", default=None)
    opts = ap.parse_args()
    opts.workdir = os.path.abspath(opts.workdir)
    opts.build_dir = os.path.abspath(opts.build_dir)
    opts.venv = os.path.abspath(opts.venv or cached_venv(opts.build_dir)
                                or os.environ.get("KDESERVE_VENV") or os.path.join(REPO, ".venv"))
    opts.shared_dir = (os.environ.get("KDESERVE_SHARED_DIR")
                       or os.path.join(os.path.dirname(REPO), "shared"))
    return opts


def cached_venv(build_dir):
    """The KDESERVE_VENV a CMake build tree was configured with (its CMakeCache.txt), or None."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("KDESERVE_VENV:"):
                    return line.split("=", 1)[1].strip() or None
    except OSError:
        pass
    return None


def consumed_paths(target):
    """stage reference (lower-case) -> the paths `target` copies from it (COPY --from)."""
    consumers = {}
    for ins in target.instrs:
        if ins.cmd == "COPY":
            flags, rest = split_flags(ins.rest)
            if "from" in flags:
                consumers.setdefault(flags["from"].lower(), []).extend(rest.split()[:-1])
    return consumers


def build(opts, builder, stages, report):
    """Runs (or stands in for) the stages before the last, then the last; returns its state."""
    t = time.monotonic()
    base_tarball(opts.workdir)
    report.durations["base tarball (cached after the first run)"] = time.monotonic() - t
    target = stages[-1]
    consumers = consumed_paths(target)
    for s in stages[:-1]:
        if opts.stage == "all":
            builder.run_stage(s)
        elif s.name in consumers or str(s.index) in consumers:
            builder.fake_stage(s, consumers.get(s.name, []) + consumers.get(str(s.index), []))
    pkgs = None
    for s in stages[:-1]:
        st = builder.states.get(s.label)
        p = st and in_root(st.root, os.path.join(st.workdir, "build/runtime-packages.txt"))
        if p and os.path.exists(p):
            with open(p) as f:
                pkgs = f.read().split()
            log(f"build/runtime-packages.txt of stage {s.label}: {' '.join(pkgs)}")
    st = builder.run_stage(target)
    if pkgs and opts.stage == "runtime":
        report.version_note = compare_versions(pkgs, st.root)
    report.add(f"Dockerfile stages ran (--stage {opts.stage})", True,
               ", ".join(f"{w} {s:.0f}s" for w, s in builder.timings
                         if w.endswith(("total", "stand-in"))))
    if pkgs is not None:
        report.add("runtime-packages.txt generated", bool(pkgs), f"{len(pkgs)} packages")
    return st


def main():
    opts = parse_args()
    if os.geteuid() != 0:
        print("dockerfile_rootfs: skipped: needs root (debootstrap, chroot, mount)")
        return SKIP
    os.makedirs(os.path.join(opts.workdir, "stages"), exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report = Report()
    builder = None
    try:
        if opts.stage == "runtime" and not os.path.isdir(opts.build_dir):
            raise Failure(f"--build-dir {opts.build_dir} is not a directory (build "
                          "kdeserve-server and kdeserve-cli first)")
        global_args, stages = parse_dockerfile(opts.dockerfile)
        builder = Builder(opts, global_args, stages)
        log(f"{opts.dockerfile}: {len(stages)} stages "
            f"({', '.join(s.label for s in stages)}), --stage {opts.stage}")
        st = build(opts, builder, stages, report)
        check_runtime(report, st, opts)
    except Failure as e:
        report.add("checker", False, str(e))
    except KeyboardInterrupt:
        report.add("checker", False, "interrupted")
    finally:
        if builder is not None:
            if opts.keep:
                log("kept: " + " ".join(builder.roots))
            else:
                for r in builder.roots:
                    try:
                        safe_rmtree(r)
                    except Failure as e:
                        report.add("cleanup", False, str(e))

    report.print_summary(builder.timings if builder is not None else None)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
