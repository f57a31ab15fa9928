#!/usr/bin/python3
"""Include hygiene of the build: no translation unit mixes LibTorch with protobuf/gRPC/spdlog.

The PyPI torch wheel puts its own protobuf 3.13 (torch/include/google/protobuf) and fmt 12
(torch/include/fmt) headers on LibTorch's include path, so a TU that sees LibTorch's include
directories and includes generated protobuf code, grpcpp or spdlog (Debian's fmt 9) compiles
against the wrong headers. server/engine/ is the boundary (DEVELOPERS.md, "The service").

How it checks: it reads the real header dependencies of every object file the build made, as the
compiler reported them (`ninja -t deps`, the build uses Ninja), and the compile commands
(compile_commands.json). A TU whose command line force-includes a precompiled header
(`-include .../cmake_pch.hxx`) gets the headers of that PCH added, since GCC leaves them out of
the TU's own depfile. Each header is classed as
  - torch:   under the configured LibTorch's include directories (for a generic system folder
             such as /usr/include, its ATen/, c10/, torch/ and caffe2/ subfolders);
  - foreign: a LibTorch header from elsewhere (/usr/include/{ATen,c10,torch,caffe2}, any
             .../torch/include/ or .../libtorch/include/ not configured);
  - rpc:     protobuf, generated *.pb.h, grpc, grpcpp, spdlog, fmt or prometheus-cpp, outside
             LibTorch's folders.
It fails when a TU includes torch and rpc headers, any foreign header, or includes rpc headers
while LibTorch's include directories are on its command line. So that it cannot pass vacuously,
it also fails unless it saw the objects of the server (every server/*.cpp and
server/engine/*.cpp), every engine object is a torch TU, and the service TU is an rpc TU.

usage: include_hygiene.py --build-dir DIR --ninja NINJA --torch-include-dirs DIR:DIR SOURCE_DIR
"""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys

GENERIC_INCLUDE_DIRS = {"/usr/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu"}
TORCH_SUBDIRS = ("ATen", "c10", "torch", "caffe2")
RPC_MARKERS = ("/google/protobuf/", "/grpc/", "/grpcpp/", "/grpc++/", "/spdlog/", "/fmt/",
               "/prometheus/")


def real(path, base):
    return os.path.realpath(os.path.join(base, path))


def under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def torch_roots(include_dirs):
    roots = []
    for d in include_dirs:
        d = os.path.realpath(d)
        if d in GENERIC_INCLUDE_DIRS:
            roots += [os.path.join(d, s) for s in TORCH_SUBDIRS]
        else:
            roots.append(d)
    return roots


def read_deps(build_dir, ninja):
    """output path (absolute) → [absolute header paths] from `ninja -t deps`."""
    text = subprocess.run([ninja, "-C", build_dir, "-t", "deps"], check=True,
                          capture_output=True, text=True).stdout
    deps, current = {}, None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line[0].isspace():
            current = real(line.split(": #deps", 1)[0], build_dir)
            deps[current] = []
        elif current is not None:
            deps[current].append(real(line.strip(), build_dir))
    return deps


def parse_command(entry):
    """(output, include dirs, force-included files) of one compile_commands.json entry."""
    args = entry.get("arguments") or shlex.split(entry["command"])
    base = entry["directory"]
    output, dirs, forced = None, [], []
    separate = {"-o": "output", "-I": "dir", "-isystem": "dir", "-iquote": "dir",
                "-idirafter": "dir", "-include": "forced"}
    i = 0
    while i < len(args):
        a, value, what = args[i], None, None
        if a in separate and i + 1 < len(args):
            what, value = separate[a], args[i + 1]
            i += 1
        elif a.startswith("-I") and len(a) > 2:
            what, value = "dir", a[2:]
        if what == "output":
            output = real(value, base)
        elif what == "dir":
            dirs.append(real(value, base))
        elif what == "forced":
            forced.append(real(value, base))
        i += 1
    return output, dirs, forced


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--ninja", default="ninja")
    ap.add_argument("--torch-include-dirs", required=True, help="':'-separated")
    ap.add_argument("source_dir")
    opts = ap.parse_args()
    build_dir = os.path.realpath(opts.build_dir)
    source_dir = os.path.realpath(opts.source_dir)
    include_dirs = [d for d in opts.torch_include_dirs.split(":") if d]
    if not include_dirs:
        sys.exit("FAIL: no LibTorch include directories given")
    roots = torch_roots(include_dirs)
    # Non-generic LibTorch include folders: none may be on an rpc TU's command line.
    torch_flag_dirs = [os.path.realpath(d) for d in include_dirs
                       if os.path.realpath(d) not in GENERIC_INCLUDE_DIRS]

    def kind(header):
        if any(under(header, r) for r in roots):
            return "torch"
        for generic in GENERIC_INCLUDE_DIRS:
            if any(under(header, os.path.join(generic, s)) for s in TORCH_SUBDIRS):
                return "foreign"
        if "/torch/include/" in header or "/libtorch/include/" in header:
            return "foreign"
        if header.endswith(".pb.h") or any(m in header for m in RPC_MARKERS):
            return "rpc"
        return None

    deps = read_deps(build_dir, opts.ninja)
    with open(os.path.join(build_dir, "compile_commands.json")) as f:
        commands = json.load(f)

    problems, torch_tus, rpc_tus, seen = [], set(), set(), {}
    for entry in commands:
        source = real(entry["file"], entry["directory"])
        output, dirs, forced = parse_command(entry)
        if output not in deps:
            continue  # not built in this build folder
        headers = list(deps[output])
        for pch in forced:
            headers += deps.get(pch + ".gch", [])
        seen[source] = output
        kinds = {}
        for h in headers:
            k = kind(h)
            if k:
                kinds.setdefault(k, h)
        name = os.path.relpath(source, source_dir)
        if "torch" in kinds:
            torch_tus.add(source)
        if "rpc" in kinds:
            rpc_tus.add(source)
        if "torch" in kinds and "rpc" in kinds:
            problems.append(f"{name}: includes LibTorch ({kinds['torch']}) and "
                            f"protobuf/gRPC/spdlog/fmt/prometheus ({kinds['rpc']})")
        if "foreign" in kinds:
            problems.append(f"{name}: includes a LibTorch header that is not the configured "
                            f"one: {kinds['foreign']} (configured: {', '.join(include_dirs)})")
        if "rpc" in kinds:
            bad = [d for d in dirs if any(under(d, t) for t in torch_flag_dirs)]
            if bad:
                problems.append(f"{name}: includes {kinds['rpc']} and is compiled with "
                                f"LibTorch's include directories: {', '.join(bad)}")

    # Not vacuous: the server's objects were built and classified as expected.
    server_sources = sorted(glob.glob(os.path.join(source_dir, "server", "*.cpp")))
    engine_sources = sorted(glob.glob(os.path.join(source_dir, "server", "engine", "*.cpp")))
    missing = [os.path.relpath(s, source_dir) for s in server_sources + engine_sources
               if s not in seen]
    if missing:
        problems.append("no header dependencies recorded for " + ", ".join(missing) +
                        f" in {build_dir}: build kdeserve-server first")
    for s in engine_sources:
        if s in seen and s not in torch_tus:
            problems.append(f"{os.path.relpath(s, source_dir)}: expected a LibTorch TU, saw no "
                            "LibTorch header (is the include-dir list right?)")
    service = os.path.join(source_dir, "server", "service.cpp")
    if service in seen and service not in rpc_tus:
        problems.append("server/service.cpp: expected a gRPC TU, saw no protobuf/gRPC header")
    if not torch_tus or not rpc_tus:
        problems.append(f"saw {len(torch_tus)} LibTorch TU(s) and {len(rpc_tus)} "
                        "protobuf/gRPC TU(s); expected both")

    print(f"include_hygiene: {len(seen)} TUs with recorded dependencies, {len(torch_tus)} "
          f"LibTorch, {len(rpc_tus)} protobuf/gRPC/spdlog/fmt/prometheus; LibTorch at "
          f"{', '.join(include_dirs)}")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
