"""The debian:12[-slim] base images: a cached minbase debootstrap plus what the official images
add (deb822 sources, the docker-* apt settings, empty apt lists and, for -slim, the dpkg path
excludes with those files removed)."""

import contextlib
import fcntl
import os
import shutil

from . import Failure, log
from .chroot import run, safe_rmtree

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
BASE_IMAGES = {"debian:12-slim": True, "debian:bookworm-slim": True,
               "debian:12": False, "debian:bookworm": False}  # image -> slim
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
APT_CONF = {
    "docker-clean": 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
}
SLIM_EXCLUDES = ["/usr/share/doc/*", "/usr/share/groff/*", "/usr/share/info/*",
                 "/usr/share/linda/*", "/usr/share/lintian/overrides/*", "/usr/share/locale/*",
                 "/usr/share/man/*"]
SLIM_DPKG_CFG = ("# slim image: docs, man pages and locales are not installed\n"
                 + "".join(f"path-exclude {p}\n" for p in SLIM_EXCLUDES)
                 + "path-include /usr/share/doc/*/copyright\n")


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def base_tarball(workdir):
    """WORKDIR/base-bookworm-minbase.tar, the pristine output of `debootstrap --variant=minbase`
    (created on first use, under a lock so that concurrent checkers share it)."""
    tar = os.path.join(workdir, f"base-{SUITE}-minbase.tar")
    with open(os.path.join(workdir, ".base.lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if os.path.exists(tar):
            return tar
        if not shutil.which("debootstrap"):
            raise Failure(f"debootstrap is not installed; it is needed once, to create {tar}: "
                          "apt-get install debootstrap")
        tmp = os.path.join(workdir, "base.tmp")
        safe_rmtree(tmp)
        log(f"debootstrap --variant=minbase {SUITE} {tmp} {MIRROR} (cached afterwards as {tar})")
        run(["debootstrap", "--variant=minbase", SUITE, tmp, MIRROR])
        run(["tar", "--numeric-owner", "-C", tmp, "-cpf", tar + ".part", "."])
        os.rename(tar + ".part", tar)
        safe_rmtree(tmp)
        return tar


def _slim(root):
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/docker"), "w") as f:
        f.write(SLIM_DPKG_CFG)
    for pat in SLIM_EXCLUDES:
        d = os.path.join(root, pat.strip("/").rstrip("/*"))
        if not os.path.isdir(d):
            continue
        for e in os.listdir(d):
            p = os.path.join(d, e)
            if pat == "/usr/share/doc/*" and os.path.isdir(p) and not os.path.islink(p):
                for sub in os.listdir(p):
                    if sub != "copyright":
                        _remove(os.path.join(p, sub))
            else:
                _remove(p)


def make_base_rootfs(workdir, root, image):
    """Unpacks `image` (a key of BASE_IMAGES) at `root`; returns its config (env, cmd,
    entrypoint)."""
    tar = base_tarball(workdir)
    safe_rmtree(root)
    os.makedirs(root)
    run(["tar", "--numeric-owner", "-C", root, "-xpf", tar])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, "etc/apt/sources.list"))
    with open(os.path.join(root, "etc/apt/sources.list.d/debian.sources"), "w") as f:
        f.write(DEBIAN_SOURCES)
    for name, text in APT_CONF.items():
        with open(os.path.join(root, "etc/apt/apt.conf.d", name), "w") as f:
            f.write(text)
    lists = os.path.join(root, "var/lib/apt/lists")
    for e in os.listdir(lists):
        if e not in ("partial", "lock"):
            os.unlink(os.path.join(lists, e))
    for d in ("var/cache/apt", "var/cache/apt/archives"):
        for e in os.listdir(os.path.join(root, d)):
            if e.endswith((".bin", ".deb")):
                os.unlink(os.path.join(root, d, e))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, "etc/resolv.conf"))  # the runtime provides it
    if BASE_IMAGES[image]:
        _slim(root)
    return {"env": {"PATH": DEFAULT_PATH}, "cmd": ["bash"], "entrypoint": []}
