#!/usr/bin/python3
"""Static checks of the deployment artefacts that no linter makes: the images build with the same
installer and build command as CI, and the Dockerfiles, Compose file, Prometheus config, Grafana
provisioning and server configs agree with each other and with the server.

Run by ctest (deploy_static_test, label unit) with /usr/bin/python3 and Debian's python3-yaml.
Environment: KDESERVE_SERVER and KDESERVE_CLI (the built binaries), KDESERVE_BUILD_DIR,
KDESERVE_VENV (the project venv with the torch wheel; ctest passes the build's)."""

import fnmatch
import json
import os
import re
import shlex
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
SERVER = os.environ.get("KDESERVE_SERVER", "")
CLI = os.environ.get("KDESERVE_CLI", "")
BUILD_DIR = os.environ.get("KDESERVE_BUILD_DIR", os.path.join(ROOT, "build"))
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
VENV = os.environ.get("KDESERVE_VENV") or os.path.join(ROOT, ".venv")
# What LibTorch loads with dlopen (not in any NEEDED), on the paths the server runs on a GPU:
# cuDNN's sub-libraries (libcudnn.so.9 loads them), the CUDA linear algebra that ATen loads lazily,
# NVRTC through libcaffe2_nvrtc (jiterator kernels) and the builtins NVRTC loads itself.
CUDA_DLOPENED = ["libtorch_cuda_linalg.so", "libcaffe2_nvrtc.so", "libnvrtc-builtins.so.13.0",
                 "libcudnn_graph.so.9", "libcudnn_engines_precompiled.so.9",
                 "libcudnn_engines_runtime_compiled.so.9", "libcudnn_heuristic.so.9",
                 "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_adv.so.9"]
# Libraries of the images' LibTorch that the host provides: glibc, GCC's runtime, Debian's zlib1g
# (runtime_packages.sh lists its package) and the NVIDIA driver the container toolkit mounts.
OUTSIDE_THE_WHEEL = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
                     "libutil.so.1", "ld-linux-x86-64.so.2", "libstdc++.so.6", "libgcc_s.so.1",
                     "libz.so.1", "libcuda.so.1"}


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def dockerfile_stages(rel):
    """[(base image, stage name, [(instruction, arguments)])] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", read(rel))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            stages.append((words[0], words[2] if len(words) > 2 else None, []))
        else:
            stages[-1][2].append((instruction, " ".join(args.split())))
    return stages


def runs(stage):
    return [args for instruction, args in stage[2] if instruction == "RUN"]


def shell_commands(script_text):
    """The script's lines with comments and blank lines removed."""
    lines = []
    for line in script_text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def cmake_options():
    """option()s of the top-level CMakeLists and the KDESERVE_* cache variables of cmake/."""
    text = read("CMakeLists.txt") + "".join(read(os.path.join("cmake", n))
                                            for n in sorted(os.listdir(os.path.join(ROOT, "cmake")))
                                            if n.endswith(".cmake"))
    return set(re.findall(r"option\((\w+)", text)) | set(
        re.findall(r"set\((KDESERVE_\w+) [^)]*\bCACHE\b", text))


def stage_env(stage):
    """A stage's ENV as a dict (KEY=VALUE form, quotes removed)."""
    env = {}
    for instruction, args in stage[2]:
        if instruction == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def site_packages(venv):
    """venv/lib/python3.X/site-packages, or None."""
    lib = os.path.join(venv, "lib")
    for name in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        path = os.path.join(lib, name, "site-packages")
        if name.startswith("python3") and os.path.isdir(path):
            return path
    return None


def venv_copies(rel):
    """The runtime stage's COPY --from=build of wheel files: [(path below the build stage's
    site-packages, destination folder)], a copied folder expanded to its files in VENV."""
    build, runtime = dockerfile_stages(rel)[:2]
    venv = stage_env(build)["KDESERVE_VENV"]
    site = site_packages(VENV)
    out = []
    for instruction, args in runtime[2]:
        if instruction != "COPY" or not args.startswith("--from=build "):
            continue
        words = args.split()[1:]
        for src in words[:-1]:
            if not src.startswith(venv + "/"):
                continue
            below = re.sub(r"^lib/python3[.0-9]*/site-packages/", "", src[len(venv) + 1:])
            host = os.path.join(site, below) if site else None
            if host and os.path.isdir(host):
                out += [(os.path.join(below, n), words[-1].rstrip("/")) for n in os.listdir(host)]
            else:  # into a folder (DEST/) or to a file name
                dest = words[-1]
                out.append((below, dest.rstrip("/") if dest.endswith("/") else os.path.dirname(dest)))
    return out


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True)
    return re.findall(r"\(NEEDED\).*\[(.*)\]", out.stdout)


def wheel_closure(site, roots):
    """{soname: path below site} of `roots` and everything they NEED from the wheels' folders
    (torch/lib, nvidia/*/lib); names found in none of them map to None."""
    index = {}
    for d in ["torch/lib"] + [f"nvidia/{n}/lib" for n in sorted(os.listdir(os.path.join(site, "nvidia")))]:
        if os.path.isdir(os.path.join(site, d)):
            for n in os.listdir(os.path.join(site, d)):
                index.setdefault(n, f"{d}/{n}")
    found, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = index.get(name)
        if found[name]:
            todo += needed(os.path.join(site, found[name]))
    return found


def load_config(rel):
    return yaml.safe_load(read(rel))


def port_of(address):
    return int(address.rsplit(":", 1)[1])


class ImagesBuildLikeCi(unittest.TestCase):
    """Each Dockerfile's build stage runs scripts/install_deps.sh and scripts/build.sh, the two
    commands the test command (CI) runs; nothing else configures CMake."""

    def test_ci_runs_the_test_command_which_runs_installer_and_build(self):
        self.assertIn("bash scripts/test.sh", shell_commands(read(".ci/run")))
        test_sh = shell_commands(read("scripts/test.sh"))
        self.assertIn("bash scripts/install_deps.sh", test_sh)
        self.assertIn("bash scripts/build.sh", test_sh)

    def test_build_stages_use_the_same_installer_and_build_command(self):
        for rel in DOCKERFILES:
            build, runtime = dockerfile_stages(rel)
            self.assertEqual(build[1], "build", rel)
            build_runs = " && ".join(runs(build))
            self.assertRegex(build_runs, r"bash scripts/install_deps\.sh --build\b", rel)
            self.assertRegex(build_runs, r"bash scripts/build\.sh kdeserve-server kdeserve-cli\b", rel)
            self.assertRegex(" ".join(runs(runtime)),
                             r"bash /tmp/kdeserve/install_deps\.sh --runtime ", rel)
            self.assertNotRegex(build_runs, r"\bcmake\b", f"{rel} must build through scripts/build.sh")

    def test_only_build_sh_configures_cmake(self):
        for rel in ["scripts/test.sh", "scripts/run.sh", "scripts/glove.sh", ".ci/run"] + DOCKERFILES:
            self.assertNotRegex(read(rel), r"cmake\s+-S", f"{rel} configures CMake itself")
        self.assertRegex(read("scripts/build.sh"), r"cmake -S \. -B")

    def test_image_cmake_options_and_targets_exist(self):
        options = cmake_options()
        cmake_text = "".join(read(p) for p in ["server/CMakeLists.txt", "client/CMakeLists.txt"])
        for rel in DOCKERFILES:
            build = dockerfile_stages(rel)[0]
            env = " ".join(args for instruction, args in build[2] if instruction == "ENV")
            args = re.search(r'KDESERVE_CMAKE_ARGS="([^"]*)"', env).group(1)
            for define in re.findall(r"-D(\w+)=", args):
                if not define.startswith("CMAKE_"):
                    self.assertIn(define, options, f"{rel}: unknown CMake option {define}")
            for target in ["kdeserve-server", "kdeserve-cli"]:
                self.assertIn(f"add_executable({target}", cmake_text)

    def test_build_profile_is_part_of_the_full_install(self):
        def listed(*args):
            out = subprocess.run(["bash", "scripts/install_deps.sh", "--list", *args], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout
            return set(out.split())
        full, build = listed(), listed("--build")
        self.assertTrue(build < full, build - full)
        self.assertFalse([p for p in full if p.startswith(("libtorch", "libblis"))],
                         "LibTorch comes from the PyPI wheel, not from Debian")
        self.assertNotIn("python3-torch", build)
        self.assertIn("patchelf", build, "the Dockerfiles set the server's RUNPATH with it")
        self.assertIn("python3-venv", build)
        self.assertNotIn("python3-venv", listed("--build", "--torch", "none"))

    def test_profiles_install_the_right_requirements(self):
        def requirements(*args):
            return subprocess.run(["bash", "scripts/install_deps.sh", "--list-requirements", *args],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout.split("\n")[:-1]
        cpu = "requirements/torch.txt[torch nvidia-cuda-runtime nvidia-cuda-cupti]"
        self.assertEqual(requirements(), ["requirements/torch.txt", "requirements/checks.txt"])
        self.assertEqual(requirements("--build"), ["requirements/torch.txt"])
        self.assertEqual(requirements("--build", "--torch", "cpu"), [cpu])
        self.assertEqual(requirements("--build", "--torch", "none"), [])
        self.assertEqual(requirements("--build", "--torch", "full", "--cuda-toolkit"),
                         ["requirements/torch.txt", "requirements/cuda-toolkit.txt"])
        for rel in ["requirements/torch.txt", "requirements/cuda-toolkit.txt"]:
            self.assertIn("--hash=sha256:", read(rel), f"{rel} is hash-pinned")
        # The images: the CPU one only the torch wheel's CPU subset, the CUDA one the full wheel
        # and the compiler wheels; both install them into the venv their ENV names.
        want = {"Dockerfile": [cpu],
                "Dockerfile.cuda": ["requirements/torch.txt", "requirements/cuda-toolkit.txt"]}
        for rel, reqs in want.items():
            build = dockerfile_stages(rel)[0]
            self.assertRegex(stage_env(build).get("KDESERVE_VENV", ""), r"^/", rel)
            m = re.search(r"bash scripts/install_deps\.sh ((?:--[\w-]+(?: (?!-)\w+)? ?)*)",
                          " && ".join(runs(build)))
            self.assertEqual(requirements(*m.group(1).split()), reqs, rel)
            copied = [args.split()[0] for i, args in build[2] if i == "COPY"]
            self.assertIn("requirements/", copied, f"{rel}: the installer reads requirements/")

    def test_copied_paths_exist_and_are_not_docker_ignored(self):
        ignored = [line.strip().rstrip("/") for line in read(".dockerignore").splitlines()
                   if line.strip() and not line.startswith("#")]

        def excluded(path, pattern):
            # Docker matches a pattern against the path and each of its leading folders; "**/"
            # matches any number of folders.
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if pattern.startswith("**/"):
                return any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
            return any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        self.assertTrue(excluded("build-cuda/server/x", "build*"))
        self.assertTrue(excluded("tests/deploy/__pycache__/a.pyc", "**/__pycache__"))
        self.assertFalse(excluded("models/weights/safetensors.h", "weights"))
        for rel in DOCKERFILES:
            for stage in dockerfile_stages(rel):
                for instruction, args in stage[2]:
                    if instruction != "COPY" or args.startswith("--from"):
                        continue
                    for src in args.split()[:-1]:
                        if src == ".":
                            continue
                        self.assertTrue(os.path.exists(os.path.join(ROOT, src)), f"{rel}: {src}")
                        for pattern in ignored:
                            self.assertFalse(excluded(src, pattern),
                                             f"{rel}: {src} is excluded by .dockerignore {pattern}")

    @unittest.skipUnless(SERVER and CLI, "KDESERVE_SERVER / KDESERVE_CLI not set")
    def test_copied_build_outputs_are_where_the_build_puts_them(self):
        for rel in DOCKERFILES:
            runtime = dockerfile_stages(rel)[1]
            copies = " ".join(args for instruction, args in runtime[2]
                              if instruction == "COPY" and args.startswith("--from=build"))
            for binary in [SERVER, CLI]:
                inside = "/src/build/" + os.path.relpath(binary, BUILD_DIR)
                self.assertIn(inside, copies, f"{rel} does not copy {inside}")

    @unittest.skipUnless(SERVER and CLI, "KDESERVE_SERVER / KDESERVE_CLI not set")
    def test_runtime_packages_cover_the_binaries(self):
        """As the Dockerfiles call it: the venv vendored (its wheel libraries are copied)."""
        def packages(*extra):
            out = subprocess.run(["bash", "scripts/runtime_packages.sh", "--vendored", VENV,
                                  SERVER, CLI, *extra], cwd=ROOT, capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout
        listed = packages()
        for want in ["libgrpc++1.51", "libprometheus-cpp-pull1.0", "libopencv-imgcodecs406",
                     "libyaml-cpp0.7", "libprotobuf32"]:
            self.assertIn(want, listed.split())
        # Runtime libraries only: no -dev package, no compiler, no Debian LibTorch.
        self.assertFalse([p for p in listed.split()
                          if p.endswith("-dev") or p.startswith(("g++", "libtorch"))])
        same = subprocess.run(["bash", "scripts/install_deps.sh", "--list", "--runtime", "/dev/stdin"],
                              cwd=ROOT, input=listed, capture_output=True, text=True, check=True)
        self.assertEqual(sorted(same.stdout.split()), sorted(listed.split()))
        # Without --vendored the wheel's libraries belong to no package: an error, not a guess.
        bare = subprocess.run(["bash", "scripts/runtime_packages.sh", SERVER], cwd=ROOT,
                              capture_output=True, text=True)
        self.assertEqual(bare.returncode, 1, bare.stdout)
        self.assertIn("belongs to no package", bare.stderr)
        # A vendored library's own dependencies: cuDNN (dlopened, named as the CUDA image does)
        # needs Debian's zlib1g.
        site = site_packages(VENV)
        cudnn = os.path.join(site or "", "nvidia/cudnn/lib")
        if os.path.isdir(cudnn):
            libs = sorted(os.path.join(cudnn, n) for n in os.listdir(cudnn) if n.startswith("libcudnn_"))
            self.assertIn("zlib1g", packages(*libs).split())


@unittest.skipUnless(site_packages(VENV) and os.path.exists(
    os.path.join(site_packages(VENV) or "", "torch/lib/libtorch_cpu.so")),
    f"no torch wheel in {VENV} (KDESERVE_VENV)")
class WheelLibrariesInTheImages(unittest.TestCase):
    """The runtime stages copy from the build stage's venv only wheel libraries that exist there,
    into the wheel's layout, exactly the ones LibTorch needs: the NEEDED closure of what the
    server links, plus (CUDA image) what LibTorch dlopens on a GPU."""

    def copies(self, rel):
        site = site_packages(VENV)
        out = venv_copies(rel)
        for below, dest in out:
            self.assertTrue(os.path.exists(os.path.join(site, below)), f"{rel}: {below} not in {site}")
            self.assertTrue(dest.endswith("/" + os.path.dirname(below)),
                            f"{rel}: {below} copied to {dest}: not the wheel's layout")
        return {os.path.basename(b): b for b, _ in out}

    def check_closure(self, rel, roots):
        site = site_packages(VENV)
        copied = self.copies(rel)
        closure = wheel_closure(site, roots)
        missing = sorted(n for n, p in closure.items() if p and n not in copied)
        self.assertFalse(missing, f"{rel} lacks libraries LibTorch needs: {missing}")
        extra = sorted(set(copied) - {n for n, p in closure.items() if p})
        self.assertFalse(extra, f"{rel} copies libraries nothing needs: {extra}")
        self.assertFalse(sorted(n for n, p in closure.items() if not p and n not in OUTSIDE_THE_WHEEL),
                         f"{rel}: libraries found neither in the wheel nor on the host")
        return copied

    def check_runpath(self, rel, copied):
        """patchelf --set-rpath names the folders of what the server links directly."""
        build = dockerfile_stages(rel)[0]
        m = re.search(r"patchelf --set-rpath (\S+) build/server/kdeserve-server", " ".join(runs(build)))
        self.assertTrue(m, f"{rel}: the server's RUNPATH is not set")
        dests = {d for _, d in venv_copies(rel)}
        for d in m.group(1).split(":"):
            self.assertIn(d, dests, f"{rel}: RUNPATH {d} is no folder the image fills")
        return m.group(1).split(":")

    def test_cpu_image(self):
        copied = self.check_closure("Dockerfile", ["libtorch_cpu.so", "libc10.so"])
        self.assertFalse([n for n in copied if "cuda" in n and n != "libcudart.so.13"])
        self.assertEqual(len(self.check_runpath("Dockerfile", copied)), 1)

    def test_cuda_image(self):
        site = site_packages(VENV)
        if not os.path.exists(os.path.join(site, "torch/lib/libtorch_cuda.so")):
            self.skipTest(f"{VENV} has the CPU subset of the torch wheel (--torch cpu)")
        copied = self.check_closure("Dockerfile.cuda", ["libtorch_cpu.so", "libtorch_cuda.so",
                                                        "libc10.so", "libc10_cuda.so",
                                                        "libcudart.so.13"] + CUDA_DLOPENED)
        for left_out in ["libtorch_python.so", "libtorch.so", "libshm.so", "libcudart_static.a",
                         "libcudadevrt.a", "libnvrtc.alt.so.13"]:
            self.assertNotIn(left_out, copied)
        self.check_runpath("Dockerfile.cuda", copied)
        # The cuDNN sub-libraries go into runtime_packages.sh (zlib1g).
        self.assertIn("nvidia/cudnn/lib/libcudnn_*.so.9", " ".join(runs(dockerfile_stages("Dockerfile.cuda")[0])))


class ImageContract(unittest.TestCase):
    """Ports, health check and user of both images match the configs they ship."""

    def test_ports_healthcheck_user_and_config(self):
        for rel, config_rel in [("Dockerfile", "deploy/config/server.yaml"),
                                ("Dockerfile.cuda", "deploy/config/server-gpu.yaml")]:
            runtime = dockerfile_stages(rel)[1]
            instr = {}
            for instruction, args in runtime[2]:
                instr.setdefault(instruction, []).append(args)
            self.assertIn(f"{config_rel} /etc/kdeserve/server.yaml", instr["COPY"], rel)
            config = load_config(config_rel)["server"]
            grpc, metrics = port_of(config["listen"]), port_of(config["metrics_listen"])
            self.assertEqual(instr["EXPOSE"], [f"{grpc} {metrics}"], rel)
            health = json.loads(instr["HEALTHCHECK"][0].split(" CMD ", 1)[1])
            self.assertEqual(health[0], "kdeserve-cli")
            self.assertIn(f"127.0.0.1:{grpc}", health)
            self.assertEqual(health[-2:], ["--service", "readiness"])
            user = instr["USER"][0]
            self.assertRegex(user, r"^[1-9][0-9]*:[1-9][0-9]*$", "numeric non-root USER")
            self.assertEqual(json.loads(instr["ENTRYPOINT"][0]), ["kdeserve-server"])
            self.assertEqual(json.loads(instr["CMD"][0]), ["--config", "/etc/kdeserve/server.yaml"])
            k8s_user = yaml.safe_load(read("deploy/k8s/base/deployment.yaml"))[
                "spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            self.assertEqual(int(user.split(":")[0]), k8s_user, rel)

    @unittest.skipUnless(SERVER, "KDESERVE_SERVER not set")
    def test_shipped_configs_parse(self):
        """The server parses every config the deployment ships; only CUDA devices become cpu and
        /models weights become empty placeholder files, since neither exists here."""
        configs = ["deploy/config/server.yaml", "deploy/config/server-gpu.yaml",
                   "deploy/k8s/base/server.yaml", "deploy/k8s/overlays/gpu/server.yaml"]
        for rel in configs:
            with tempfile.TemporaryDirectory() as tmp:
                def placeholder(match):
                    path = os.path.join(tmp, match.group(2))
                    open(path, "w").close()
                    return match.group(1) + path
                text = re.sub(r"(weights:\s*)/models/(\S+)", placeholder, read(rel))
                text = re.sub(r"device:\s*cuda(:\d+)?", "device: cpu", text)
                path = os.path.join(tmp, "server.yaml")
                with open(path, "w") as f:
                    f.write(text)
                out = subprocess.run([SERVER, "--config", path, "--print-config"],
                                     capture_output=True, text=True)
                self.assertEqual(out.returncode, 0, f"{rel}: {out.stderr}")


class ComposeMonitoringWiring(unittest.TestCase):
    """deploy/docker-compose.yml, Prometheus and Grafana provisioning point at each other."""

    @classmethod
    def setUpClass(cls):
        cls.compose = yaml.safe_load(read("deploy/docker-compose.yml"))
        cls.services = cls.compose["services"]

    def mounts(self, service):
        out = {}
        for volume in self.services[service].get("volumes", []):
            source, target = volume.split(":")[:2]
            out[target] = source
        return out

    def test_bind_mounts_exist(self):
        for name in self.services:
            for target, source in self.mounts(name).items():
                if source.startswith("./"):
                    self.assertTrue(os.path.exists(os.path.join(ROOT, "deploy", source)),
                                    f"{name}: {source}")

    def test_server_service_matches_the_image(self):
        server = self.services["kdeserve"]
        self.assertEqual(server["build"]["dockerfile"], "Dockerfile")
        self.assertTrue(os.path.exists(os.path.join(ROOT, "deploy", server["build"]["context"],
                                                    "Dockerfile")))
        config = load_config("deploy/config/server.yaml")["server"]
        published = {p.rsplit(":", 1)[1] for p in server["ports"]}
        self.assertEqual(published, {str(port_of(config["listen"])),
                                     str(port_of(config["metrics_listen"]))})
        runtime = dockerfile_stages("Dockerfile")[1]
        health = json.loads([a for i, a in runtime[2] if i == "HEALTHCHECK"][0].split(" CMD ", 1)[1])
        self.assertEqual(server["healthcheck"]["test"], ["CMD"] + health)
        grace = int(server["stop_grace_period"].rstrip("s"))
        self.assertGreater(grace, config["drain_delay_seconds"] + config["shutdown_grace_seconds"])

    def test_healthcheck_timings_match_the_images(self):
        """Both images' HEALTHCHECK options (start period included) are the Compose service's."""
        compose = self.services["kdeserve"]["healthcheck"]
        want = {"interval": compose["interval"], "timeout": compose["timeout"],
                "retries": str(compose["retries"]), "start-period": compose["start_period"]}
        self.assertRegex(want["start-period"], r"^[1-9][0-9]*s$")
        for rel in DOCKERFILES:
            runtime = dockerfile_stages(rel)[1]
            options = [a for i, a in runtime[2] if i == "HEALTHCHECK"][0].split(" CMD ", 1)[0]
            got = dict(re.fullmatch(r"--([a-z-]+)=(\S+)", o).groups() for o in options.split())
            self.assertEqual(got, want, rel)

    def test_compose_conventions(self):
        """What dclint enforced beyond the compose-spec schema (deploy_compose_schema) and still
        matters; its ordering and quote-style rules were style only."""
        self.assertEqual(self.compose.get("name"), "kdeserve", "a project name")
        self.assertNotIn("version", self.compose, "the version field is obsolete")
        grpc = port_of(load_config("deploy/config/server.yaml")["server"]["listen"])
        published, containers = [], []
        for name, service in self.services.items():
            self.assertFalse("build" in service and "image" in service, f"{name}: build or image")
            if "image" in service:
                self.assertRegex(service["image"], r":(?!latest$)[\w][\w.-]*$",
                                 f"{name}: image tag")
            if "container_name" in service:
                containers.append(service["container_name"])
            for mapping in service.get("ports", []):
                # IP:HOST:CONTAINER: an explicit interface; only gRPC on all of them.
                ip, host_port, container_port = mapping.split(":")
                self.assertEqual(ip, "0.0.0.0" if int(container_port) == grpc else "127.0.0.1",
                                 f"{name}: {mapping}")
                published.append(host_port)
        self.assertEqual(len(published), len(set(published)), "host ports published twice")
        self.assertEqual(len(containers), len(set(containers)), "container names used twice")
        # Ports quoted: YAML 1.1 reads an unquoted "22:22" as the base-60 number 1342.
        services = {k.value: v for k, v in yaml.compose(read("deploy/docker-compose.yml")).value
                    if k.value == "services"}["services"]
        for name, service in services.value:
            for key, value in service.value:
                if key.value == "ports":
                    for item in value.value:
                        self.assertIn(item.style, ("'", '"'),
                                      f"{name.value}: unquoted port {item.value}")

    def test_prometheus_scrapes_the_server_and_loads_the_rules(self):
        self.assertEqual(self.mounts("prometheus")["/etc/prometheus"], "./prometheus")
        prom = yaml.safe_load(read("deploy/prometheus/prometheus.yml"))
        job = [j for j in prom["scrape_configs"] if j["job_name"] == "kdeserve"][0]
        metrics_port = port_of(load_config("deploy/config/server.yaml")["server"]["metrics_listen"])
        self.assertEqual(job["static_configs"][0]["targets"], [f"kdeserve:{metrics_port}"])
        self.assertEqual(prom["rule_files"], ["rules/*.yml"])

    def test_grafana_provisioning(self):
        mounts = self.mounts("grafana")
        self.assertEqual(mounts["/etc/grafana/provisioning"], "./grafana/provisioning")
        datasource = yaml.safe_load(read("deploy/grafana/provisioning/datasources/prometheus.yml"))
        ds = datasource["datasources"][0]
        self.assertEqual(ds["url"], "http://prometheus:9090")
        self.assertIn("prometheus", self.services)
        provider = yaml.safe_load(read("deploy/grafana/provisioning/dashboards/kdeserve.yml"))
        path = provider["providers"][0]["options"]["path"]
        self.assertEqual(mounts[path], "./grafana/dashboards")
        home = self.services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        self.assertEqual(os.path.dirname(home), path)
        self.assertTrue(os.path.exists(os.path.join(ROOT, "deploy/grafana/dashboards",
                                                    os.path.basename(home))))

    def test_dashboard_structure(self):
        dash = json.loads(read("deploy/grafana/dashboards/kdeserve.json"))
        variables = {v["name"] for v in dash["templating"]["list"]}
        self.assertEqual(variables, {"datasource", "model", "instance"})
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        exprs = 0
        for panel in dash["panels"]:
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
            self.assertTrue(panel.get("description"), panel["title"])
            for target in panel["targets"]:
                exprs += 1
                for var in re.findall(r"\$(\w+)", target["expr"]):
                    self.assertIn(var, variables | {"__rate_interval"}, panel["title"])
        self.assertGreaterEqual(exprs, 15)


if __name__ == "__main__":
    unittest.main(verbosity=2)
