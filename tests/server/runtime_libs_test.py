#!/usr/bin/python3
"""The running kdeserve-server loads ONE protobuf and ONE OpenMP runtime.

Why: the PyPI torch wheel carries protobuf 3.13 linked statically into libtorch_cpu.so (its
symbols hidden, except a few templates such as google::protobuf::Arena::CreateMaybeMessage<
onnx_torch::...>) and its own OpenMP runtime, torch/lib/libgomp.so.1, while gRPC links Debian's
libprotobuf.so.32 and Debian's OpenCV and BLIS link Debian's libgomp.so.1. Two copies of either
in one process would mean two incompatible protobuf registries, or two OpenMP thread pools
oversubscribing the cores.

How it checks:
  1. It starts the real binary on free loopback ports with a one-model configuration, waits for
     the "ready:" log line (models loaded and warmed up, so every library LibTorch dlopens is in),
     reads /proc/<pid>/maps and collects the distinct mapped files. Exactly one file named
     libprotobuf* and exactly one OpenMP runtime (libgomp*, libiomp*, libomp*) must be mapped,
     and LibTorch (libtorch_cpu) must be. It prints which OpenMP runtime that is: the wheel's
     torch/lib/libgomp.so.1 or Debian's. Both have the soname libgomp.so.1, so the dynamic
     loader maps whichever a library needs first (breadth-first over DT_NEEDED) and satisfies
     every later libgomp.so.1 with it: in the venv build libtorch_cpu (early in the binary's
     DT_NEEDED) gets the wheel's through its $ORIGIN rpath, and BLIS, which Debian's OpenCV
     loads as libblas.so.3, then shares it. Then SIGTERM; the server must exit 0.
  2. It runs `kdeserve-server --help` (static initialisers run, including the generated
     protobuf descriptors' registration) under LD_DEBUG=bindings with LD_BIND_NOW=1, so the
     loader resolves every symbol reference at start-up and logs each binding ("binding file A
     to B: normal symbol `S'"). For every binding of a symbol in namespace google::protobuf
     (mangled _ZN6google8protobuf…, _ZNK…, _ZTV/_ZTI/_ZTS…, thunks, statics):
       - a LibTorch library (libtorch*, libc10*) that does not link libprotobuf carries its own
         (the wheel's static 3.13): nothing else may resolve into it, and it may resolve only
         into itself (its few exported templates). Debian's libtorch_cpu links the shared
         libprotobuf.so.32 and is held to the rules below like any other library;
       - a symbol that libprotobuf defines (non-weak, `nm -D`) must resolve into that one
         libprotobuf, or into the binary where the binary holds it by a copy relocation
         (libprotobuf's data, e.g. fixed_address_empty_string: still one instance); the rest
         are inline/template instantiations from the same Debian protobuf headers, unified
         into the binary or a gRPC library (counted, allowed).
     At least one binding into libprotobuf must be seen. std:: templates instantiated over
     protobuf types that bind into LibTorch (weak definitions in both libraries) are listed.

usage: runtime_libs_test.py SERVER_BINARY
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# A symbol in namespace google::protobuf: functions, data, vtables/typeinfo, thunks, statics.
PROTOBUF_SYMBOL = re.compile(r"^_Z(?:T[VIS]|Thn\d+_|Tv\d+_n\d+_|GVZ|Z)?NK?6google8protobuf")
# LibTorch's own libraries (the wheel's torch/lib or Debian's /usr/lib/<triplet>).
TORCH_LIBRARY = re.compile(r"^lib(?:torch|c10|caffe2|shm)")
SYSTEM_LIB_DIRS = {"/usr/lib", "/lib", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"}
BINDING = re.compile(r"binding file (.+?) \[\d+\] to (.+?) \[\d+\]: \S+ symbol `([^']+)'")
OPENMP = re.compile(r"^lib(?:gomp|iomp\d*|omp)\b")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mapped_files(pid):
    files = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                files.add(os.path.realpath(parts[5].strip()))
    return files


def check_running_server(server):
    port, mport = free_port(), free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(f"server:\n  listen: 127.0.0.1:{port}\n  metrics_listen: 127.0.0.1:{mport}\n"
                 "  threads: 2\nmodels:\n  - name: t2t_vit_7\n    default_attention: exact\n"
                 "    allowed_attention: [exact]\n")
    config.close()
    proc = subprocess.Popen([server, "--config", config.name], stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    log = []

    def read_log():
        for line in proc.stderr:
            log.append(line)
            if " ready: " in line:
                ready.set()
    threading.Thread(target=read_log, daemon=True).start()
    try:
        t0 = time.time()
        while not ready.wait(0.2):
            assert proc.poll() is None, "server exited early:\n" + "".join(log)
            assert time.time() - t0 < 180, "not ready within 180 s:\n" + "".join(log)
        files = mapped_files(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "server did not exit 0 on SIGTERM:\n" + "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.unlink(config.name)
    names = lambda pattern: sorted(f for f in files if pattern(os.path.basename(f)))
    protobufs = names(lambda b: b.startswith("libprotobuf"))
    openmp = names(lambda b: OPENMP.match(b) is not None)
    torch = names(lambda b: b.startswith("libtorch_cpu"))
    print("mapped protobuf:", protobufs)
    print("mapped OpenMP runtime:", openmp)
    print("mapped LibTorch:", torch)
    assert torch, "libtorch_cpu is not mapped: is this the server?"
    assert len(protobufs) == 1, f"expected exactly one libprotobuf, mapped: {protobufs}"
    assert len(openmp) == 1, f"expected exactly one OpenMP runtime, mapped: {openmp}"
    torch_lib_dir = os.path.dirname(torch[0])
    own = os.path.dirname(openmp[0]) == torch_lib_dir and torch_lib_dir not in SYSTEM_LIB_DIRS
    which = "LibTorch's own (next to libtorch_cpu)" if own else "the system's"
    print(f"the server loads {which} OpenMP runtime: {openmp[0]}")
    return protobufs[0]


def check_bindings(server, protobuf):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LD_DEBUG="bindings", LD_BIND_NOW="1",
                   LD_DEBUG_OUTPUT=os.path.join(tmp, "ld"))
        run = subprocess.run([server, "--help"], env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        bindings = []
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), errors="replace") as f:
                for line in f:
                    m = BINDING.search(line)
                    if m:
                        bindings.append(m.groups())
    assert bindings, "LD_DEBUG=bindings logged nothing"
    strong = strong_definitions(protobuf)
    copied = copy_relocations(server)
    binary = os.path.realpath(server)
    static_copy_cache = {}

    def static_copy(path):
        """A LibTorch library that does not link libprotobuf: it carries its own protobuf."""
        path = os.path.realpath(path)
        if path not in static_copy_cache:
            static_copy_cache[path] = (TORCH_LIBRARY.match(os.path.basename(path)) is not None
                                       and not any(n.startswith("libprotobuf")
                                                   for n in needed(path)))
        return static_copy_cache[path]

    counts = {"libprotobuf": 0, "copied": 0, "instantiations": 0, "torch_own": 0}
    std_into_torch = set()
    problems = []
    for source, target, symbol in bindings:
        real_source, real_target = os.path.realpath(source), os.path.realpath(target)
        if PROTOBUF_SYMBOL.match(symbol) is None:
            # std:: templates instantiated over protobuf types (e.g. an unordered_map of
            # Descriptor::WellKnownType) are weak in both libprotobuf and libtorch_cpu, and the
            # earlier one in the lookup scope wins: reported, not protobuf code or data.
            if static_copy(target) and real_source != real_target and "6google8protobuf" in symbol:
                std_into_torch.add(symbol)
            continue
        if static_copy(source) or static_copy(target):
            if real_source == real_target:
                counts["torch_own"] += 1  # the static copy's own exported templates
            else:
                problems.append(f"{symbol}: {source} -> {target} (LibTorch's own protobuf)")
        elif real_target == protobuf:
            counts["libprotobuf"] += 1
        elif real_target == binary and symbol in copied:
            counts["copied"] += 1  # libprotobuf's data, copy-relocated into the binary
        elif symbol in strong:
            problems.append(f"{symbol}: {source} -> {target}, but {protobuf} defines it")
        else:
            counts["instantiations"] += 1  # inline/template code of the same protobuf headers
    print(f"{len(bindings)} bindings; google::protobuf symbols: {counts['libprotobuf']} into "
          f"{protobuf}, {counts['copied']} into its data copy-relocated into the binary, "
          f"{counts['instantiations']} inline/template instantiations in the binary or gRPC, "
          f"{counts['torch_own']} within a LibTorch that carries its own protobuf")
    if std_into_torch:
        print(f"note: {len(std_into_torch)} std:: template instantiation(s) over protobuf types "
              "bind into LibTorch (weak, libstdc++ code), e.g. " + sorted(std_into_torch)[0])
    assert not problems, "protobuf symbols bound outside the one libprotobuf:\n  " + "\n  ".join(
        problems[:40])
    assert counts["libprotobuf"] > 0, "no google::protobuf symbol bound into libprotobuf"


def needed(library):
    """The DT_NEEDED names of a shared object (readelf -d)."""
    out = subprocess.run(["readelf", "-dW", library], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines()
            if "(NEEDED)" in line and "[" in line]


def copy_relocations(binary):
    """Symbols the binary holds through R_X86_64_COPY relocations (readelf -r)."""
    out = subprocess.run(["readelf", "-rW", binary], check=True, capture_output=True,
                         text=True).stdout
    return {line.split()[4].split("@")[0] for line in out.splitlines()
            if "_COPY" in line and len(line.split()) >= 5}


def strong_definitions(library):
    """Symbols `library` defines non-weakly (nm -D types T, D, R, B)."""
    out = subprocess.run(["nm", "-D", "--defined-only", library], check=True,
                         capture_output=True, text=True).stdout
    return {p[2] for p in (line.split() for line in out.splitlines())
            if len(p) == 3 and p[1] in "TDRB"}


def main():
    server = sys.argv[1]
    protobuf = check_running_server(server)
    check_bindings(server, protobuf)
    print("runtime libraries test passed")


if __name__ == "__main__":
    main()
