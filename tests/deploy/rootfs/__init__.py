"""Runs the stages of a Dockerfile in debootstrap'ed Debian 12 chroots (dockerfile_rootfs.py).

Modules: dockerfile (parsing, variable substitution, .dockerignore), chroot (mounts, chroot
commands, user lookup, safe removal), base (the debian:12[-slim] base images), builder (stage
execution and the stand-in for the build stage), checks (running the image and the report).
"""

import time

T0 = time.monotonic()


def log(msg):
    """Prints a progress line stamped with the seconds since the checker started."""
    print(f"[dockerfile_rootfs {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


class Failure(Exception):
    """A check or a step of the checker failed; the message says why."""
