"""Root filesystem helpers: commands, mounts for chrooted commands, paths and users inside a
root filesystem, and removal that never crosses into a mounted file system."""

import contextlib
import os
import shlex
import shutil
import subprocess

from . import Failure


def run(argv, check=True, **kw):
    """subprocess.run that raises Failure on a non-zero exit status unless check is False."""
    r = subprocess.run(argv, **kw)
    if check and r.returncode != 0:
        raise Failure(f"command failed ({r.returncode}): {' '.join(map(shlex.quote, argv))}")
    return r


def mounts_under(path):
    """Mount points at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def safe_rmtree(path):
    """Removes a root filesystem: unmounts anything still mounted below it first and never
    crosses into another file system (a forgotten /dev bind must not cost the host its /dev)."""
    if not os.path.lexists(path):
        return
    for mp in mounts_under(path):
        subprocess.run(["umount", "-R", mp], stderr=subprocess.DEVNULL)
        if mp in mounts_under(path):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    left = mounts_under(path)
    if left:
        raise Failure(f"refusing to remove {path}: still mounted: {left}")
    run(["rm", "-rf", "--one-file-system", path])


def in_root(root, path, follow_last=True):
    """The host path of `path` inside `root`, resolving symlinks as the chroot would."""
    parts = [p for p in path.split("/") if p and p != "."]
    cur, hops = [], 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if cur:
                cur.pop()
            continue
        cand = os.path.join(root, *cur, p)
        if os.path.islink(cand) and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise Failure(f"symlink loop resolving {path} in {root}")
            target = os.readlink(cand)
            if target.startswith("/"):
                cur = []
            parts = [x for x in target.split("/") if x and x != "."] + parts
            continue
        cur.append(p)
    return os.path.join(root, *cur)


def _read_fields(root, path, min_fields):
    with contextlib.suppress(FileNotFoundError):
        with open(in_root(root, path)) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= min_fields:
                    yield fields


def lookup_user(root, spec):
    """USER spec (name|uid[:group|gid]) -> (uid, gid, home) from the rootfs' passwd/group."""
    user, _, group = spec.partition(":")
    passwd = {f[0]: (int(f[2]), int(f[3]), f[5]) for f in _read_fields(root, "/etc/passwd", 7)}
    groups = {f[0]: int(f[2]) for f in _read_fields(root, "/etc/group", 3)}
    if user.isdigit():
        uid = int(user)
        entry = next((v for v in passwd.values() if v[0] == uid), None)
        gid, home = (entry[1], entry[2]) if entry else (0, "/")
    elif user in passwd:
        uid, gid, home = passwd[user]
    else:
        raise Failure(f"USER {spec}: no user {user} in the image")
    if group:
        if group.isdigit():
            gid = int(group)
        elif group in groups:
            gid = groups[group]
        else:
            raise Failure(f"USER {spec}: no group {group} in the image")
    return uid, gid, home


def _umount(path, *flags):
    if subprocess.run(["umount", *flags, path]).returncode != 0:
        subprocess.run(["umount", *flags, "-l", path])


@contextlib.contextmanager
def chroot_mounts(root, for_run=True):
    """/proc, /dev (rbind, rslave), /sys (read-only) and, for RUN, the host's resolv.conf and a
    policy-rc.d that keeps maintainer scripts from starting daemons, for a command's duration."""
    mounted, restore = [], []
    try:
        for target, argv in (("proc", ["mount", "-t", "proc", "proc"]),
                             ("dev", ["mount", "--rbind", "/dev"]),
                             ("sys", ["mount", "-o", "bind,ro", "/sys"])):
            tp = os.path.join(root, target)
            os.makedirs(tp, exist_ok=True)
            run(argv + [tp])
            mounted.append(tp)
            if target == "dev":
                run(["mount", "--make-rslave", tp])
        if for_run:
            resolv = os.path.join(root, "etc/resolv.conf")
            old = None
            if os.path.lexists(resolv):
                old = resolv + ".dockerfile-rootfs-saved"
                os.rename(resolv, old)
            shutil.copyfile("/etc/resolv.conf", resolv)
            restore.append((resolv, old))
            rcd = os.path.join(root, "usr/sbin/policy-rc.d")
            if not os.path.lexists(rcd):
                with open(rcd, "w") as f:
                    f.write("#!/bin/sh\nexit 101\n")
                os.chmod(rcd, 0o755)
                restore.append((rcd, None))
        yield
    finally:
        for path, old in reversed(restore):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if old:
                os.rename(old, path)
        for tp in reversed(mounted):
            _umount(tp, "-R")


def chroot_preexec(root, cwd, uid, gid):
    """A preexec_fn that enters `root`, changes to `cwd` and drops to uid:gid unless both are 0."""
    def fn():
        os.chroot(root)
        os.chdir(cwd)
        if uid or gid:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
    return fn


@contextlib.contextmanager
def readonly_view(root, view):
    """`docker run --read-only --tmpfs /tmp`: a read-only bind of root at `view` with proc, dev,
    sys and a tmpfs /tmp mounted in it."""
    safe_rmtree(view)
    os.makedirs(view)
    mounted = []
    try:
        run(["mount", "--bind", root, view])
        mounted.append(view)
        run(["mount", "-o", "remount,bind,ro", view])
        run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=256m", "tmpfs",
             os.path.join(view, "tmp")])
        mounted.append(os.path.join(view, "tmp"))
        with chroot_mounts(view, for_run=False):
            yield view
    finally:
        for mp in reversed(mounted):
            _umount(mp)
        with contextlib.suppress(OSError):
            os.rmdir(view)
