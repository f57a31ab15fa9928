#!/usr/bin/python3
"""Static checks of the deployment artefacts that no linter makes: the images build with the same
installer and build command as CI, and the Dockerfiles, Compose file, Prometheus config, Grafana
provisioning and server configs agree with each other and with the server.

Run by ctest (deploy_static_test, label unit) with /usr/bin/python3 and Debian's python3-yaml.
Environment: KDESERVE_SERVER and KDESERVE_CLI (the built binaries), KDESERVE_BUILD_DIR."""

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
    return set(re.findall(r"option\((\w+)", read("CMakeLists.txt")))


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
        self.assertIn("libtorch-dev", build)
        self.assertNotIn("libtorch-dev", listed("--build", "--external-torch"))
        self.assertNotIn("python3-torch", build)

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
        out = subprocess.run(["bash", "scripts/runtime_packages.sh", SERVER, CLI], cwd=ROOT,
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        packages = out.stdout.split()
        for needed in ["libtorch1.13", "libgrpc++1.51", "libprometheus-cpp-pull1.0",
                       "libopencv-imgcodecs406", "libyaml-cpp0.7"]:
            self.assertIn(needed, packages)
        # Runtime libraries only: no -dev package, no compiler.
        self.assertFalse([p for p in packages if p.endswith("-dev") or p.startswith("g++")])
        listed = subprocess.run(["bash", "scripts/install_deps.sh", "--list", "--runtime", "/dev/stdin"],
                                cwd=ROOT, input=out.stdout, capture_output=True, text=True, check=True)
        self.assertIn("libblis4-openmp", listed.stdout.split(), "runtime must select BLIS")


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
