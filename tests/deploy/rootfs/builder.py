"""Executes a Dockerfile's stages: each in its own root filesystem, RUN chrooted, COPY from the
build context (honouring .dockerignore) or an earlier stage; and, for --stage runtime, a
directory that stands in for the build stage, filled from the host's build outputs."""

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time

from . import Failure, log
from .base import BASE_IMAGES, DEFAULT_PATH, make_base_rootfs
from .chroot import chroot_mounts, chroot_preexec, in_root, lookup_user, run, safe_rmtree
from .dockerfile import DockerIgnore, json_list, split_flags, substitute


class StageState:
    """A stage being built: its root filesystem and the image config its instructions set."""

    def __init__(self, stage, root, base_config):
        self.stage, self.root = stage, root
        self.env = dict(base_config["env"])
        self.workdir = "/"
        self.user = "0:0"
        self.args = {}
        self.labels, self.expose, self.volumes = {}, [], []
        self.healthcheck = None
        self.entrypoint = list(base_config["entrypoint"])
        self.cmd, self.cmd_inherited = list(base_config["cmd"]), True

    def vars(self):
        """The variables visible to substitution: ARGs, overridden by ENV."""
        v = dict(self.args)
        v.update(self.env)
        return v


class Builder:
    """Runs stages under WORKDIR/stages/<Dockerfile>-<mode>-<stage>; `timings` collects (what,
    seconds) and `roots` the root filesystems created (for removal)."""

    def __init__(self, opts, global_args, stages):
        self.opts = opts
        self.context = os.path.dirname(os.path.abspath(opts.dockerfile))
        self.ignore = DockerIgnore(self.context)
        self.stages = stages
        self.build_args = dict(a.split("=", 1) for a in opts.build_arg)
        self.global_args = {}
        for ins in global_args:
            self._declare_arg(ins, self.global_args, {})
        self.states = {}       # stage label -> StageState
        self.timings = []
        self.roots = []
        # --stage runtime: the host folders that stand in for paths a build stage names in its
        # ENV (the venv scripts/install_deps.sh fills), by variable name.
        self.stand_in_env = {"KDESERVE_VENV": opts.venv}

    def _declare_arg(self, ins, into, variables):
        for word in shlex.split(ins.rest):
            name, eq, default = word.partition("=")
            if name in self.build_args:
                into[name] = self.build_args[name]
            elif eq:
                into[name] = substitute(default, variables, ins.where())
            elif name in self.global_args:
                into[name] = self.global_args[name]
            else:
                into.setdefault(name, "")

    def stage_by_ref(self, ref):
        """The stage named `ref` (or with index `ref`), or None."""
        for s in self.stages:
            if s.name == ref.lower() or str(s.index) == ref:
                return s
        return None

    def _stage_root(self, stage, suffix=""):
        return os.path.join(self.opts.workdir, "stages",
                            f"{os.path.basename(self.opts.dockerfile)}-{self.opts.stage}-"
                            f"{stage.label}{suffix}")

    def run_stage(self, stage):
        """Builds `stage` from its base image or an earlier stage; returns its StageState."""
        t0 = time.monotonic()
        image = substitute(stage.base, self.global_args, f"line {stage.lineno}")
        root = self._stage_root(stage)
        log(f"stage {stage.label}: FROM {image} -> {root}")
        parent = self.stage_by_ref(image)
        if parent is not None:
            if parent.label not in self.states:
                raise Failure(f"stage {stage.label} builds FROM {image}, which did not run")
            safe_rmtree(root)
            run(["cp", "-a", self.states[parent.label].root, root])
            pst = self.states[parent.label]
            base_config = {"env": pst.env, "cmd": pst.cmd, "entrypoint": pst.entrypoint}
        elif image in BASE_IMAGES:
            base_config = make_base_rootfs(self.opts.workdir, root, image)
        else:
            raise Failure(f"line {stage.lineno}: base image {image} is not supported "
                          f"(only {', '.join(BASE_IMAGES)} or an earlier stage)")
        self.roots.append(root)
        st = StageState(stage, root, base_config)
        self.states[stage.label] = st
        self.timings.append((f"stage {stage.label}: base rootfs", time.monotonic() - t0))
        for ins in stage.instrs:
            t = time.monotonic()
            getattr(self, "_do_" + ins.cmd.lower())(st, ins)
            if ins.cmd in ("RUN", "COPY"):
                self.timings.append((f"stage {stage.label}: {ins.cmd} (line {ins.lineno})",
                                     time.monotonic() - t))
        self.timings.append((f"stage {stage.label}: total", time.monotonic() - t0))
        return st

    def _do_arg(self, st, ins):
        self._declare_arg(ins, st.args, st.vars())

    def _do_env(self, st, ins):
        text = substitute(ins.rest, st.vars(), ins.where())
        words = shlex.split(text)
        if words and "=" not in words[0]:  # legacy form: ENV key value with spaces
            st.env[words[0]] = text.split(None, 1)[1] if len(words) > 1 else ""
            return
        for w in words:
            if "=" not in w:
                raise Failure(f"{ins.where()}: cannot parse {w!r}")
            k, v = w.split("=", 1)
            st.env[k] = v

    def _do_label(self, st, ins):
        for w in shlex.split(substitute(ins.rest, st.vars(), ins.where())):
            k, _, v = w.partition("=")
            st.labels[k] = v

    def _do_workdir(self, st, ins):
        path = substitute(ins.rest, st.vars(), ins.where())
        st.workdir = os.path.normpath(os.path.join(st.workdir, path))
        os.makedirs(in_root(st.root, st.workdir), exist_ok=True)

    def _do_user(self, st, ins):
        st.user = substitute(ins.rest, st.vars(), ins.where()).strip()

    def _do_expose(self, st, ins):
        st.expose += substitute(ins.rest, st.vars(), ins.where()).split()

    def _do_volume(self, st, ins):
        text = substitute(ins.rest, st.vars(), ins.where())
        st.volumes += json_list(text) or text.split()

    def _do_entrypoint(self, st, ins):
        st.entrypoint = json_list(ins.rest) or ["/bin/sh", "-c", ins.rest]
        if st.cmd_inherited:
            st.cmd, st.cmd_inherited = [], False

    def _do_cmd(self, st, ins):
        st.cmd = json_list(ins.rest) or ["/bin/sh", "-c", ins.rest]
        st.cmd_inherited = False

    def _do_healthcheck(self, st, ins):
        flags, rest = split_flags(ins.rest)
        if rest.upper() == "NONE":
            st.healthcheck = None
            return
        m = re.match(r"CMD\s+(.*)$", rest, re.S | re.I)
        if not m:
            raise Failure(f"{ins.where()}: cannot parse {ins.rest!r}")
        unknown = set(flags) - {"interval", "timeout", "retries", "start-period",
                                "start-interval"}
        if unknown:
            raise Failure(f"{ins.where()}: unknown options {sorted(unknown)}")
        argv = json_list(m.group(1)) or ["/bin/sh", "-c", m.group(1)]
        st.healthcheck = {"argv": argv, **flags}

    def _do_run(self, st, ins):
        flags, rest = split_flags(ins.rest)
        if flags:
            raise Failure(f"{ins.where()}: RUN flags {flags} are not supported")
        argv = json_list(rest) or ["/bin/sh", "-c", rest]
        env = {k: v for k, v in st.args.items() if k not in st.env}
        env.update(st.env)
        uid, gid, home = lookup_user(st.root, st.user)
        env.setdefault("HOME", home if uid else "/root")
        log(f"stage {st.stage.label}: RUN (line {ins.lineno}) {' '.join(argv)[-300:]}")
        with chroot_mounts(st.root), _host_pip_cert(st.root, env):
            r = subprocess.run(argv, env=env,
                               preexec_fn=chroot_preexec(st.root, st.workdir, uid, gid))
        if r.returncode != 0:
            raise Failure(f"{ins.where()} failed with exit status {r.returncode}")

    def _do_copy(self, st, ins):
        flags, rest = split_flags(ins.rest)
        unknown = set(flags) - {"from", "chown", "chmod", "link"}
        if unknown:
            raise Failure(f"{ins.where()}: COPY flags {sorted(unknown)} are not supported")
        words = json_list(rest) or substitute(rest, st.vars(), ins.where()).split()
        if len(words) < 2:
            raise Failure(f"{ins.where()}: COPY needs a source and a destination")
        srcs, dst = words[:-1], words[-1]
        if not dst.startswith("/"):
            dst = os.path.join(st.workdir, dst)
        dst_is_dir = dst.endswith("/") or len(srcs) > 1
        uid = gid = 0
        if "chown" in flags:
            uid, gid, _ = lookup_user(st.root, flags["chown"])
        mode = int(flags["chmod"], 8) if "chmod" in flags else None
        if "from" in flags:
            src_stage = self.stage_by_ref(flags["from"])
            if src_stage is None:
                raise Failure(f"{ins.where()}: --from={flags['from']} is not a stage "
                              "(images are not supported)")
            if src_stage.label not in self.states:
                raise Failure(f"{ins.where()}: stage {src_stage.label} did not run")
            src_root, ignore = self.states[src_stage.label].root, None
        else:
            src_root, ignore = self.context, self.ignore
        log(f"stage {st.stage.label}: COPY{' --from=' + flags['from'] if 'from' in flags else ''}"
            f" {' '.join(srcs)} {dst}")
        for src in srcs:
            if any(c in src for c in "*?["):
                raise Failure(f"{ins.where()}: wildcards in COPY sources are not supported")
            rel = os.path.normpath(src).lstrip("/")
            host = in_root(src_root, rel) if ignore is None else os.path.join(src_root, rel)
            inside = os.path.realpath(host).startswith(os.path.realpath(src_root))
            if ignore is not None and not inside:
                raise Failure(f"{ins.where()}: {src} leaves the source root")
            if not os.path.lexists(host):
                raise Failure(f"{ins.where()}: {src} does not exist in "
                              f"{'stage ' + flags['from'] if ignore is None else 'the context'}")
            if ignore is not None and rel != "." and ignore.excluded(rel):
                raise Failure(f"{ins.where()}: {src} is excluded by .dockerignore")
            if os.path.isdir(host):
                target = in_root(st.root, dst)
                _mkdirs(st.root, dst)
                _copy_tree(host, target, ignore, "" if rel == "." else rel, uid, gid, mode)
            else:
                if dst_is_dir or os.path.isdir(in_root(st.root, dst)):
                    _mkdirs(st.root, dst)
                    target = os.path.join(in_root(st.root, dst), os.path.basename(host))
                else:
                    _mkdirs(st.root, os.path.dirname(dst.rstrip("/")))
                    target = in_root(st.root, dst, follow_last=False)
                _copy_entry(host, target, uid, gid, mode)

    def fake_stage(self, stage, consumers):
        """A directory standing in for `stage`: its context COPYs, the host's build outputs that
        later stages copy from it (`consumers`, absolute paths in the stage) and the commands
        after scripts/build.sh in its last RUN, run on the host. A consumed path below the folder
        an ENV variable of `stand_in_env` names in the stage (ENV KDESERVE_VENV=/opt/...: the
        venv its installer fills) comes from the host folder given for that variable, and the
        host commands see the variable set to that folder."""
        t0 = time.monotonic()
        root = self._stage_root(stage, "-standin")
        log(f"stage {stage.label}: stand-in (not built) -> {root}")
        safe_rmtree(root)
        os.makedirs(root)
        self.roots.append(root)
        st = StageState(stage, root, {"env": {"PATH": DEFAULT_PATH}, "cmd": [],
                                      "entrypoint": []})
        self.states[stage.label] = st
        build_run = next((i for i, ins in enumerate(stage.instrs)
                          if ins.cmd == "RUN" and "scripts/build.sh" in ins.rest), None)
        if build_run is None:
            raise Failure(f"stage {stage.label}: no RUN calls scripts/build.sh; cannot stand in")
        for i, ins in enumerate(stage.instrs):
            if ins.cmd == "COPY":
                self._do_copy(st, ins)
            elif ins.cmd == "RUN" and i == build_run:
                self._host_post_build(st, ins, consumers)
            elif ins.cmd in ("ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "VOLUME"):
                getattr(self, "_do_" + ins.cmd.lower())(st, ins)
        self.timings.append((f"stage {stage.label}: stand-in", time.monotonic() - t0))
        return st

    def _host_output(self, rel):
        """The host file for a path relative to the stand-in's WORKDIR: build/... comes from
        --build-dir, anything else from the build context."""
        first, _, below = rel.partition("/")
        if first == "build" and below:
            return os.path.join(self.opts.build_dir, below)
        return os.path.join(self.context, rel)

    def _stand_in_map(self, st):
        """{folder named by the stage's ENV: host folder} for the variables of stand_in_env."""
        mapped = {}
        for var, host in self.stand_in_env.items():
            if var in st.env and st.env[var].startswith("/"):
                mapped[os.path.normpath(st.env[var])] = host
                log(f"  stand-in: the build stage's {var}={st.env[var]} is the host's {host}")
        return mapped

    def _host_post_build(self, st, ins, consumers):
        segments = re.split(r"\s&&\s", ins.rest)
        idx = max(i for i, s in enumerate(segments) if "scripts/build.sh" in s)
        after = [s.strip() for s in segments[idx + 1:]]
        mapped = self._stand_in_map(st)
        outputs = []  # (target in the stand-in, host file)
        for path in consumers:
            rel = os.path.relpath(path, st.workdir)
            target = in_root(st.root, path)
            below = [(d, h) for d, h in mapped.items() if path.startswith(d + "/")]
            if below:
                d, h = below[0]
                host = os.path.join(h, os.path.relpath(path, d))
                if not os.path.exists(host):
                    raise Failure(f"stage {st.stage.label}: a later stage copies {path}, but the "
                                  f"host folder standing in for {d} lacks it: {host}")
                if not os.path.lexists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    _link_or_copy_tree(host, target)
                continue
            if rel.startswith(".."):
                continue
            host = self._host_output(rel)
            outputs.append((target, host))
            if os.path.lexists(target) or not os.path.exists(host):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(host, target)
            built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.stat(host).st_mtime))
            log(f"  stand-in {path} <- {host} (built {built})")
        n_mapped = sum(1 for p in consumers if any(p.startswith(d + "/") for d in mapped))
        if n_mapped:
            log(f"  stand-in: {n_mapped} paths from the host folders of "
                f"{', '.join(sorted(mapped))} (hard links where possible)")
        if not after:
            return
        cmd = " && ".join(after)
        cwd = in_root(st.root, st.workdir)
        env = dict(os.environ)
        env.update(st.env)
        for var, host in self.stand_in_env.items():
            if var in st.env:
                env[var] = host
        log(f"  on the host, in {cwd}: {cmd}")
        r = subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, env=env)
        if r.returncode != 0:
            missing = [os.path.relpath(host, self.opts.build_dir) for target, host in outputs
                       if not os.path.lexists(target)]
            raise Failure(f"{ins.where()}: the commands after scripts/build.sh failed on the "
                          f"host with exit status {r.returncode}"
                          + (f"; --build-dir {self.opts.build_dir} lacks {', '.join(missing)}"
                             if missing else ""))


PIP_CERT_IN_ROOT = "/tmp/.dockerfile-rootfs-pip-cert.pem"


@contextlib.contextmanager
def _host_pip_cert(root, env):
    """A machine whose network re-signs TLS (its CA in the host's $PIP_CERT bundle, not in
    Debian's) gives RUN that bundle as PIP_CERT, copied in for the command's duration, as it
    gives RUN its resolv.conf: pip in the build stage reaches PyPI as pip on the host does. A
    Docker build on such a network needs the same (a build secret). Nothing stays in the image."""
    cert = os.environ.get("PIP_CERT")
    if not cert or not os.path.isfile(cert) or "PIP_CERT" in env:
        yield
        return
    target = in_root(root, PIP_CERT_IN_ROOT)
    shutil.copyfile(cert, target)
    os.chmod(target, 0o644)
    env["PIP_CERT"] = PIP_CERT_IN_ROOT
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


def _link_or_copy(src, dst):
    """A hard link to the host's read-only input (the venv's libraries: gigabytes for the CUDA
    image), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_or_copy_tree(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _mkdirs(root, path):
    cur = "/"
    for part in [p for p in path.split("/") if p]:
        cur = os.path.join(cur, part)
        h = in_root(root, cur)
        if not os.path.isdir(h):
            os.mkdir(h, 0o755)


def _copy_entry(src, dst, uid, gid, mode):
    if os.path.lexists(dst) and not os.path.isdir(dst):
        os.unlink(dst)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)
        if mode is not None:
            os.chmod(dst, mode)
    os.lchown(dst, uid, gid)


def _copy_tree(src, dst, ignore, rel, uid, gid, mode):
    os.makedirs(dst, exist_ok=True)
    shutil.copystat(src, dst)
    if mode is not None:
        os.chmod(dst, mode)
    os.lchown(dst, uid, gid)
    for e in sorted(os.scandir(src), key=lambda e: e.name):
        erel = f"{rel}/{e.name}" if rel else e.name
        if ignore is not None and ignore.excluded(erel) and not ignore.has_negation:
            continue
        if e.is_dir(follow_symlinks=False):
            _copy_tree(e.path, os.path.join(dst, e.name), ignore, erel, uid, gid, mode)
        elif ignore is not None and ignore.excluded(erel):
            continue
        else:
            _copy_entry(e.path, os.path.join(dst, e.name), uid, gid, mode)
