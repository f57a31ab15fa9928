"""Renders deploy/k8s/overlays/{cpu,gpu} and deploy/kserve with `kubectl kustomize` and validates
every object, and the stand-alone manifests in deploy/k8s/tools, strictly (unknown fields
rejected) against pinned schemas:
  * Kubernetes objects: the Kubernetes KUBERNETES_VERSION schemas of kubernetes-validate
    ("-strict" flavour);
  * ServiceMonitor, PrometheusRule: the prometheus-operator PROMETHEUS_OPERATOR_VERSION CRD
    schemas, from the pydantic models of cloudcoil.models.prometheus_operator (generated from
    those CRDs), made strict at run time as kubernetes-json-schema's "-strict" flavour is;
  * ServingRuntime, InferenceService: KServe KSERVE_VERSION, strict, from the kserve wheel's
    openapi models with Kubernetes types from kubernetes-validate (kserve_schema.py says how).
An apiVersion/kind without a schema is a failure. It then checks what the schemas cannot: probes,
ports, selectors and references agree with each other and with the server config in the
ConfigMap, the drain fits in the termination grace period, the HPA's custom metric is the one
the prometheus-adapter rule provides, and the PrometheusRule holds the same groups as
deploy/prometheus/rules; the KServe runtime matches the InferenceService and the image's config,
and deploy/k8s (semantic_kserve). (The real server parses the configs in deploy_static_test.py.)

Run with the project venv's python (requirements/checks.txt; scripts/install_deps.sh):
  .venv/bin/python tests/deploy/validate_k8s.py [--kubectl KUBECTL] [REPO_ROOT]  (ctest: deploy_k8s)
tests/deploy/validate_k8s_test.py shows that each check fails on a broken copy."""

import argparse
import functools
import importlib
import importlib.metadata
import json
import os
import posixpath
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml
from cloudcoil.resources import Resource

from kserve_schema import KSERVE_VERSION, KUBERNETES_VERSION, kserve_validator

# The prometheus-operator release whose CRDs the ServiceMonitor and PrometheusRule must fit: the
# pinned cloudcoil.models.prometheus_operator 0.80.1.x is generated from its CRDs.
PROMETHEUS_OPERATOR_VERSION = "0.80.1"
# API group -> the package holding its models: cloudcoil's pydantic models (one module per
# version), or "kserve" (openapi models, see kserve_validator).
CRD_MODELS = {"monitoring.coreos.com": ("cloudcoil.models.prometheus_operator",
                                        PROMETHEUS_OPERATOR_VERSION),
              "serving.kserve.io": ("kserve", KSERVE_VERSION)}
# The image's built-in config (Dockerfile: COPY deploy/config/server.yaml), which the KServe
# runtime runs with.
IMAGE_CONFIG = ("/etc/kdeserve/server.yaml", "deploy/config/server.yaml")
# The fields of an InferenceService's predictor.model that are not container fields.
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri",
                       "storage"}
OVERLAYS = ["cpu", "gpu"]
MISSING = object()


def dig(value, *keys, default=None):
    """value[k1][k2]...; `default` where a key or index is missing or a level is not a container."""
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return default
    return value


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def subset(small, big):
    """Every key/value of `small` (a mapping or nothing) is in `big`."""
    return all(isinstance(big, dict) and k in big and big[k] == v for k, v in (small or {}).items())


def canonical(value):
    """JSON with sorted keys: kustomize reorders keys, which carries no meaning."""
    return json.dumps(value, sort_keys=True)


def port(address):
    return int(address.rsplit(":", 1)[1]) if isinstance(address, str) and ":" in address else None


def host(address):
    return address.rsplit(":", 1)[0] if isinstance(address, str) and ":" in address else None


def cpu_quantity(value):
    """A CPU quantity ("4", "500m", 2) in cores; None when absent or unparsable."""
    match = re.fullmatch(r"([0-9.]+)(m?)", str(value)) if value is not None else None
    if not match:
        return None
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def strict(schema):
    """Rejects additional properties in every object schema that lists its properties (as
    kubernetes-json-schema's "-strict" flavour does); free-form objects stay open. A pattern's
    Go-style inline flags after its '^' (the CRDs' "^(?i)(abort|warn)?$") move to the front, where
    Python's re wants them."""
    if isinstance(schema, dict):
        if schema.get("properties") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if isinstance(schema.get("pattern"), str):
            schema["pattern"] = re.sub(r"^\^(\(\?[a-zA-Z]+\))", r"\1^", schema["pattern"])
        for key in ("properties", "$defs", "definitions"):
            for sub in (schema.get(key) or {}).values():
                strict(sub)
        for key in ("items", "additionalProperties", "not"):
            strict(schema.get(key))
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in schema.get(key) or []:
                strict(sub)
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(api_version, kind):
    """A validator of the CRD's strict schema, or an error message."""
    group, _, version = api_version.partition("/")
    if group not in CRD_MODELS:
        return f"no schema for {api_version} (no CRD models for group {group})"
    package, release = CRD_MODELS[group]
    installed = importlib.metadata.version(package)
    if not (installed == release or installed.startswith(release + ".")):
        return f"{package} {installed} installed, want the {release} CRDs (requirements/checks.txt)"
    if package == "kserve":
        return kserve_validator(version, kind)
    try:
        module = importlib.import_module(f"{package}.{version}")
    except ImportError:
        return f"no schema for {api_version} ({package} has no {version})"
    model = getattr(module, kind, None)
    if not (isinstance(model, type) and issubclass(model, Resource)):
        return f"no schema for kind {kind} of {api_version}"
    schema = strict(model.model_json_schema(by_alias=True))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(obj):
    """[message] of validating `obj` against its pinned schema; a missing schema is an error."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["no apiVersion or kind"]
    if api_version.partition("/")[0] in CRD_MODELS:
        validator = crd_validator(api_version, kind)
        if isinstance(validator, str):
            return [validator]
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        return [describe(cause(e)) for e in errors]
    try:
        used = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema for {api_version} {kind} in Kubernetes {KUBERNETES_VERSION}"
                f" ({e.message})"]
    except kubernetes_validate.ValidationError as e:
        return [describe(cause(e))]
    if used != KUBERNETES_VERSION:
        return [f"validated against Kubernetes {used}, want {KUBERNETES_VERSION}"
                " (kubernetes-validate lacks its schemas)"]
    return []


def cause(error):
    """The most relevant error under anyOf/oneOf; the error inside pydantic's Optional[...]
    (anyOf: [the schema, {"type": "null"}]) rather than "not valid under any of the given
    schemas". Several real alternatives stay as they are."""
    error = jsonschema.exceptions.best_match([error])
    while error.validator in ("anyOf", "oneOf") and error.context:
        real = [e for e in error.context
                if error.validator_value[e.relative_schema_path[0]] != {"type": "null"}]
        if not real or len({e.relative_schema_path[0] for e in real}) > 1:
            break
        error = jsonschema.exceptions.best_match(real)
    return error


def describe(error):
    return f"{error.json_path}: {error.message}"


class Report:
    def __init__(self, out, err):
        self.out, self.err, self.failures = out, err, []

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
            print(f"FAIL {what}", file=self.err)
        return bool(ok)

    def say(self, line):
        print(line, file=self.out)


def validate_schema(report, where, obj):
    name = dig(obj, "metadata", "name")
    errors = schema_errors(obj)
    for e in errors:
        report.check(False, f"{where}: {obj.get('kind')}/{name}: schema: {e}")
    return not errors


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def check_probes(check, where, c, port_name, grpc_port):
    """Native gRPC probes on the numeric gRPC port; start-up and readiness on "readiness",
    liveness on "" (never waits on the model queue); start-up allows 5 minutes for loading."""
    for probe, service in [("startupProbe", "readiness"), ("readinessProbe", "readiness"),
                           ("livenessProbe", "")]:
        grpc = dig(c, probe, "grpc")
        if not check(isinstance(grpc, dict), f"{where}: {probe} is not a grpc probe"):
            continue
        got = grpc.get("port")
        check(got == grpc_port and is_int(got),
              f"{where}: {probe} port {got} is not the {port_name} port {grpc_port}")
        got = grpc.get("service") or ""
        check(got == service, f"{where}: {probe} service '{got}', want '{service}'")
    period = dig(c, "startupProbe", "periodSeconds")
    threshold = dig(c, "startupProbe", "failureThreshold")
    check(is_number(period) and is_number(threshold) and period * threshold >= 300,
          f"{where}: startupProbe allows under 5 minutes for loading")


def check_drain(check, where, c, srv, grace):
    """preStop sleep, then SIGTERM -> drain_delay, then shutdown grace: all inside the termination
    grace period."""
    pre_stop = dig(c, "lifecycle", "preStop")
    sleep = dig(pre_stop, "sleep", "seconds")
    if sleep is None:
        try:
            sleep = float(dig(pre_stop, "exec", "command", -1))
        except (TypeError, ValueError):
            sleep = None
    if not check(is_number(sleep) and 0 < sleep < float("inf"), f"{where}: a preStop sleep"):
        sleep = 0
    drain, shutdown = srv.get("drain_delay_seconds", 0), srv.get("shutdown_grace_seconds", 10)
    if check(is_number(drain) and is_number(shutdown),
             f"{where}: server drain_delay_seconds {drain}, shutdown_grace_seconds {shutdown}"):
        needed = sleep + drain + shutdown
        needed = int(needed) if float(needed).is_integer() else needed
        check(is_number(grace) and grace > needed, f"{where}: terminationGracePeriodSeconds"
              f" {grace} <= preStop + drain + grace = {needed}")


def semantic(report, root, overlay, objects):
    """The cross-checks of one rendered overlay; returns the server config or None."""
    check = report.check
    k8s = os.path.join(root, "deploy/k8s")

    def one(kind, name=None):
        found = [o for o in objects if o.get("kind") == kind
                 and (name is None or dig(o, "metadata", "name") == name)]
        check(len(found) == 1,
              f"{overlay}: expected one {kind}{'/' + name if name else ''}, found {len(found)}")
        return found[0] if found else None

    for kind in ["Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
                 "PrometheusRule"]:
        one(kind)
    deploy = one("Deployment", "kdeserve")
    services = [o for o in objects if o.get("kind") == "Service"]
    check(len(services) == 2, f"{overlay}: expected the kdeserve and kdeserve-headless Services")
    if not deploy:
        return None
    ns = next((dig(o, "metadata", "name") for o in objects if o.get("kind") == "Namespace"), None)
    for o in objects:
        if o.get("kind") != "Namespace":
            check(dig(o, "metadata", "namespace") == ns,
                  f"{overlay}: {o.get('kind')}/{dig(o, 'metadata', 'name')} not in namespace {ns}")

    pod = dig(deploy, "spec", "template", default={})
    pod_labels = dig(pod, "metadata", "labels")
    pod_spec = dig(pod, "spec", default={})
    check(subset(dig(deploy, "spec", "selector", "matchLabels"), pod_labels),
          f"{overlay}: Deployment selector does not match its pod labels")
    c = next((x for x in pod_spec.get("containers") or [] if x.get("name") == "kdeserve"), None)
    if not check(c, f"{overlay}: no kdeserve container"):
        return None
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    check(ports.get("grpc") and ports.get("metrics"),
          f"{overlay}: container ports named grpc and metrics")

    check_probes(check, overlay, c, "grpc", ports.get("grpc"))

    # Non-root, read-only root filesystem.
    psc = pod_spec.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True and is_int(psc.get("runAsUser")) and psc["runAsUser"] > 0,
          f"{overlay}: pod must run as a numeric non-root user")
    check(csc.get("readOnlyRootFilesystem") is True, f"{overlay}: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False,
          f"{overlay}: allowPrivilegeEscalation false")
    mounts = c.get("volumeMounts") or []
    volumes = pod_spec.get("volumes") or []
    check(any(m.get("mountPath") == "/tmp" for m in mounts),
          f"{overlay}: a writable /tmp with a read-only root")

    # Config from the rendered ConfigMap.
    cm_volume = next((v for v in volumes if v.get("configMap")), None)
    cm = next((o for o in objects if o.get("kind") == "ConfigMap"
               and dig(o, "metadata", "name") == dig(cm_volume, "configMap", "name")), None)
    if not check(cm, f"{overlay}: the config volume names no rendered ConfigMap"):
        return None
    config_mount = next((m for m in mounts if m.get("name") == cm_volume.get("name")), {})
    args = c.get("args") or []
    config_arg = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    config_text = dig(cm, "data", "server.yaml")
    check(isinstance(config_mount.get("mountPath"), str) and config_text
          and config_arg == posixpath.join(config_mount["mountPath"], "server.yaml"),
          f"{overlay}: --config {config_arg} is not the ConfigMap's server.yaml")
    config = yaml.safe_load(config_text or "") or {}
    srv = config.get("server") or {}
    models = config.get("models") or []
    check(host(srv.get("listen")) == "0.0.0.0" and port(srv.get("listen")) == ports.get("grpc"),
          f"{overlay}: server.listen {srv.get('listen')} must be 0.0.0.0:{ports.get('grpc')}"
          " (probes use the pod IP)")
    check(host(srv.get("metrics_listen")) == "0.0.0.0"
          and port(srv.get("metrics_listen")) == ports.get("metrics"),
          f"{overlay}: server.metrics_listen {srv.get('metrics_listen')}")

    check_drain(check, overlay, c, srv, pod_spec.get("terminationGracePeriodSeconds"))

    # Weights from the PVC.
    pvc_volume = next((v for v in volumes if v.get("persistentVolumeClaim")), None)
    pvc = next((o for o in objects if o.get("kind") == "PersistentVolumeClaim"), None)
    check(pvc_volume and pvc and dig(pvc_volume, "persistentVolumeClaim", "claimName")
          == dig(pvc, "metadata", "name"), f"{overlay}: weights volume is not the rendered PVC")
    weights_mount = next((m for m in mounts
                          if pvc_volume and m.get("name") == pvc_volume.get("name")), {})
    check(weights_mount.get("readOnly") is True, f"{overlay}: weights mounted read-only")
    for m in models:
        weights = m.get("weights")
        check(isinstance(weights, str) and weights.startswith(f"{weights_mount.get('mountPath')}/"),
              f"{overlay}: model {m.get('name')} weights {weights} not on the weights volume")

    # Accelerator: GPU limit (integer, limits; requests equal if set) and CUDA devices, or neither.
    limits = dig(c, "resources", "limits") or {}
    requests = dig(c, "resources", "requests") or {}
    cpu_limit = cpu_quantity(limits.get("cpu"))
    check(limits.get("memory") and requests.get("memory") and requests.get("cpu"),
          f"{overlay}: cpu/memory requests and a memory limit")
    check(not cpu_limit or (is_number(srv.get("threads")) and srv["threads"] <= cpu_limit),
          f"{overlay}: server.threads {srv.get('threads')} above the CPU limit {limits.get('cpu')}")
    gpus = limits.get("nvidia.com/gpu", MISSING)
    devices = [m.get("device", "cpu") for m in models]
    image = c.get("image") or ""
    if overlay == "gpu":
        check(is_int(gpus) and gpus >= 1,
              f"{overlay}: limits nvidia.com/gpu must be a whole number >= 1")
        check(requests.get("nvidia.com/gpu", gpus) == gpus,
              f"{overlay}: GPU requests must equal limits")
        check(all(str(d).startswith("cuda") for d in devices),
              f"{overlay}: every model on a CUDA device ({','.join(map(str, devices))})")
        check(image.endswith("-cuda"), f"{overlay}: image {image} is not the CUDA image")
        check(any(t.get("key") == "nvidia.com/gpu" for t in pod_spec.get("tolerations") or []),
              f"{overlay}: toleration for nvidia.com/gpu")
    else:
        check(gpus is MISSING, f"{overlay}: no GPU on the CPU overlay")
        check(all(d == "cpu" for d in devices),
              f"{overlay}: every model on cpu ({','.join(map(str, devices))})")
        check(not image.endswith("-cuda"), f"{overlay}: image {image} is the CUDA image")

    # Services select the pods and name their ports after the container's.
    for s in services:
        s_name, s_ports = dig(s, "metadata", "name"), dig(s, "spec", "ports") or []
        check(subset(dig(s, "spec", "selector"), pod_labels),
              f"{overlay}: Service {s_name} selects no pod")
        for p in s_ports:
            target = p.get("targetPort")
            check(isinstance(target, str) and target in ports,
                  f"{overlay}: Service {s_name} port {p.get('name')} targets unknown {target}")
        grpc = next((p for p in s_ports if p.get("name") == "grpc"), {})
        check(grpc.get("appProtocol") == "grpc",
              f"{overlay}: Service {s_name} grpc port with appProtocol grpc")

    # The ServiceMonitor selects exactly the Service with the metrics port.
    sm = next((o for o in objects if o.get("kind") == "ServiceMonitor"), {})
    selected = [s for s in services
                if subset(dig(sm, "spec", "selector", "matchLabels"), dig(s, "metadata", "labels"))]
    if check(len(selected) == 1,
             f"{overlay}: ServiceMonitor selects {len(selected)} Services, want 1"):
        target, target_name = selected[0], dig(selected[0], "metadata", "name")
        for e in dig(sm, "spec", "endpoints") or []:
            check(any(p.get("name") == e.get("port") for p in dig(target, "spec", "ports") or []),
                  f"{overlay}: ServiceMonitor port {e.get('port')} not on Service {target_name}")
        check(dig(target, "metadata", "labels", dig(sm, "spec", "jobLabel")) == "kdeserve",
              f"{overlay}: ServiceMonitor jobLabel must give job=\"kdeserve\""
              " (the rules select it)")

    # HPA: scales this Deployment on the adapter's custom metric.
    hpa = next((o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"), {})
    ref = dig(hpa, "spec", "scaleTargetRef") or {}
    check(ref.get("kind") == "Deployment" and ref.get("name") == dig(deploy, "metadata", "name"),
          f"{overlay}: HPA target")
    low, high = dig(hpa, "spec", "minReplicas"), dig(hpa, "spec", "maxReplicas")
    check(is_number(low) and is_number(high) and low <= high, f"{overlay}: HPA min <= max")
    window = dig(hpa, "spec", "behavior", "scaleDown", "stabilizationWindowSeconds")
    check(is_number(window) and window >= 300, f"{overlay}: HPA scale-down stabilisation >= 300 s")
    adapter = load_yaml(os.path.join(k8s, "prometheus-adapter/values.yaml")) or {}
    provided = [dig(r, "name", "as") for r in dig(adapter, "rules", "custom") or []]
    for m in dig(hpa, "spec", "metrics") or []:
        name = dig(m, "pods", "metric", "name")
        check(m.get("type") == "Pods" and name in provided,
              f"{overlay}: HPA metric {name} is not provided by prometheus-adapter"
              f" ({','.join(map(str, provided))})")
    pdb = next((o for o in objects if o.get("kind") == "PodDisruptionBudget"), {})
    check(subset(dig(pdb, "spec", "selector", "matchLabels"), pod_labels),
          f"{overlay}: PodDisruptionBudget selects no pod")

    # PrometheusRule = deploy/prometheus/rules/kdeserve.rules.yml.
    rules = load_yaml(os.path.join(root, "deploy/prometheus/rules/kdeserve.rules.yml")) or {}
    pr = next((o for o in objects if o.get("kind") == "PrometheusRule"), {})
    check(canonical(dig(pr, "spec", "groups")) == canonical(rules.get("groups")), f"{overlay}:"
          " PrometheusRule groups differ from deploy/prometheus/rules/kdeserve.rules.yml")
    return config


def semantic_kserve(report, root, objects, k8s_objects):
    """The cross-checks of deploy/kserve: the InferenceService's runtime, model format, protocol
    and mode; the container KServe runs against the image's config (port, metrics annotations,
    probes, drain, threads), deploy/k8s's security settings and image; no deploy/k8s selector."""
    check = report.check
    runtimes = {dig(o, "metadata", "name"): o for o in objects if o.get("kind") == "ServingRuntime"}
    services = [o for o in objects if o.get("kind") == "InferenceService"]
    check(runtimes and services, "kserve: expected a ServingRuntime and an InferenceService")
    k8s_image = next((dig(o, "spec", "template", "spec", "containers", 0, "image")
                      for o in k8s_objects if o.get("kind") == "Deployment"), None)
    for isvc in services:
        where = f"kserve: InferenceService/{dig(isvc, 'metadata', 'name')}"
        predictor = dig(isvc, "spec", "predictor", default={})
        model, notes = predictor.get("model") or {}, dig(isvc, "metadata", "annotations") or {}
        runtime = runtimes.get(model.get("runtime"))
        if not check(runtime, f"{where}: runtime {model.get('runtime')} is not a ServingRuntime"
                     f" here ({', '.join(map(str, runtimes))})"):
            continue
        rt = f"kserve: ServingRuntime/{dig(runtime, 'metadata', 'name')}"
        spec = runtime.get("spec") or {}
        formats = [f.get("name") for f in spec.get("supportedModelFormats") or []]
        got = dig(model, "modelFormat", "name")
        check(got in formats, f"{where}: modelFormat {got} is not a supportedModelFormat of"
              f" {rt[8:]} ({', '.join(map(str, formats))})")
        # The Open Inference Protocol v2 over gRPC only: KServe's "v2" is its REST binding.
        protocols, got = spec.get("protocolVersions"), model.get("protocolVersion")
        check(protocols == ["grpc-v2"], f"{rt}: protocolVersions {protocols}, want [grpc-v2]")
        check(got == "grpc-v2", f"{where}: protocolVersion {got}, want grpc-v2")
        got = notes.get("serving.kserve.io/deploymentMode")
        check(got == "Standard", f"{where}: deploymentMode {got}, want Standard")
        got = notes.get("serving.kserve.io/enable-prometheus-scraping")
        check(got == "false", f"{where}: enable-prometheus-scraping {got}, want false (\"true\""
              " sets prometheus.io/port to the queue-proxy's 9091, which Standard mode lacks)")
        low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas")
        check(is_int(low) and is_int(high) and 1 <= low <= high,
              f"{where}: replicas 1 <= min <= max")

        # The container KServe runs: the runtime's kserve-container with the model's fields over it.
        c = next((x for x in spec.get("containers") or [] if x.get("name") == "kserve-container"),
                 {})
        c = dict(c, **{k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS})
        ports = c.get("ports") or []
        grpc_port = dig(ports, 0, "containerPort")
        check(len(ports) == 1 and ports[0].get("name") == "h2c",
              f"{rt}: kserve-container with one port, named h2c (KServe's name for gRPC)")
        args = c.get("args") or []
        flags = dict(zip(args[:-1], args[1:]))
        check(flags.get("--config") == IMAGE_CONFIG[0],
              f"{rt}: --config {flags.get('--config')}, want the image's {IMAGE_CONFIG[0]}")
        srv = (load_yaml(os.path.join(root, IMAGE_CONFIG[1])) or {}).get("server") or {}
        listen = flags.get("--listen", srv.get("listen"))
        metrics = flags.get("--metrics-listen", srv.get("metrics_listen"))
        threads = flags.get("--threads", srv.get("threads"))
        check(host(listen) == "0.0.0.0" and port(listen) == grpc_port, f"{rt}: h2c containerPort"
              f" {grpc_port} is not server.listen {listen} ({IMAGE_CONFIG[1]} and args)")
        want = {"prometheus.kserve.io/port": str(port(metrics)), "prometheus.io/port":
                str(port(metrics)), "prometheus.kserve.io/path": "/metrics",
                "prometheus.io/path": "/metrics", "prometheus.io/scrape": "true"}
        got = {k: dig(spec, "annotations", k) for k in want}
        check(got == want, f"{rt}: annotations {', '.join(k for k in want if got[k] != want[k])}"
              f" do not name server.metrics_listen {metrics}'s port and /metrics")
        check_probes(check, rt, c, "h2c", grpc_port)
        check_drain(check, rt, c, srv, predictor.get("terminationGracePeriodSeconds", 30))

        # deploy/k8s's security settings, on the container (a ServingRuntime has no pod's).
        sc = c.get("securityContext") or {}
        check(sc.get("runAsNonRoot") is True and is_int(sc.get("runAsUser")) and sc["runAsUser"] > 0
              and sc.get("readOnlyRootFilesystem") is True
              and sc.get("allowPrivilegeEscalation") is False,
              f"{rt}: a numeric non-root user, read-only root, no privilege escalation")
        tmp = [m.get("name") for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
        check(tmp and tmp[0] in [v.get("name") for v in spec.get("volumes") or []],
              f"{rt}: a writable /tmp volume with a read-only root")

        # The CPU image of deploy/k8s, its threads within the CPU limit.
        limits = dig(c, "resources", "limits") or {}
        requests = dig(c, "resources", "requests") or {}
        check(limits.get("memory") and requests.get("memory") and requests.get("cpu")
              and "nvidia.com/gpu" not in limits, f"{where}: cpu/memory requests, a memory limit,"
              " no GPU (the CPU image)")
        check(str(threads).isdigit() and 0 < int(threads) <= (cpu_quantity(limits.get("cpu")) or 0),
              f"{where}: server threads {threads} not within the CPU limit {limits.get('cpu')}")
        check(c.get("image") == k8s_image, f"{rt}: image {c.get('image')} is not deploy/k8s's"
              f" {k8s_image}")

        # deploy/k8s's Services and PodDisruptionBudget must not select these pods.
        labels = dict(dig(isvc, "metadata", "labels") or {}, **(spec.get("labels") or {}),
                      **(predictor.get("labels") or {}))
        for o in k8s_objects:
            sel = dig(o, "spec", "selector", "matchLabels") or dig(o, "spec", "selector")
            check(o.get("kind") not in ("Service", "PodDisruptionBudget") or not sel
                  or not subset(sel, labels),
                  f"{where}: its pods carry the selector of deploy/k8s's"
                  f" {o.get('kind')}/{dig(o, 'metadata', 'name')}")


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def run(root, kubectl="kubectl", out=sys.stdout, err=sys.stderr):
    """Validates ROOT/deploy/k8s and ROOT/deploy/kserve; returns the failure messages (each also
    printed to `err`)."""
    report = Report(out, err)
    k8s = os.path.join(root, "deploy/k8s")
    report.say(f"schemas: Kubernetes {KUBERNETES_VERSION} (kubernetes-validate"
               f" {importlib.metadata.version('kubernetes-validate')}, strict), prometheus-operator"
               f" v{PROMETHEUS_OPERATOR_VERSION} CRDs (cloudcoil.models.prometheus_operator"
               f" {importlib.metadata.version('cloudcoil.models.prometheus_operator')}, strict),"
               f" KServe {KSERVE_VERSION} (kserve {importlib.metadata.version('kserve')} models,"
               " strict)")
    rendered_objects = {}
    for overlay in OVERLAYS:
        rendered = subprocess.run([kubectl, "kustomize", os.path.join(k8s, "overlays", overlay)],
                                  capture_output=True, text=True)
        if not report.check(rendered.returncode == 0,
                            f"{overlay}: kubectl kustomize failed: {rendered.stderr.strip()}"):
            continue
        objects = rendered_objects[overlay] = documents(rendered.stdout)
        valid = sum(validate_schema(report, overlay, o) for o in objects)
        config = semantic(report, root, overlay, objects)
        report.say(f"{overlay}: {len(objects)} objects rendered, {valid} schema-valid"
                   f" ({', '.join(str(o.get('kind')) for o in objects)});"
                   f" {len((config or {}).get('models') or [])} models configured")
    # Stand-alone manifests (deploy/k8s/tools): schema-valid, and aimed at the rendered objects.
    tools = os.path.join(k8s, "tools")
    for file in sorted(f for f in os.listdir(tools) if f.endswith(".yaml")):
        where = f"tools/{file}"
        with open(os.path.join(tools, file)) as f:
            objects = documents(f.read())
        for o in objects:
            validate_schema(report, where, o)
            for v in dig(o, "spec", "volumes") or []:
                claim = dig(v, "persistentVolumeClaim", "claimName")
                if claim:
                    report.check(claim == "kdeserve-weights", f"{where}: claim {claim}")
            report.check(dig(o, "metadata", "namespace") == "kdeserve", f"{where}: namespace")
        report.say(f"{where}: {len(objects)} object(s) checked")
    # deploy/kserve: schema-valid, and consistent with the server config and deploy/k8s (CPU).
    rendered = subprocess.run([kubectl, "kustomize", os.path.join(root, "deploy/kserve")],
                              capture_output=True, text=True)
    if report.check(rendered.returncode == 0,
                    f"kserve: kubectl kustomize failed: {rendered.stderr.strip()}"):
        objects = documents(rendered.stdout)
        valid = sum(validate_schema(report, "kserve", o) for o in objects)
        semantic_kserve(report, root, objects, rendered_objects.get("cpu") or [])
        report.say(f"kserve: {len(objects)} objects rendered, {valid} schema-valid"
                   f" ({', '.join(str(o.get('kind')) for o in objects)})")
    return report.failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(__file__), "../.."),
                        help="repository root (default: this checkout)")
    parser.add_argument("--kubectl", default=os.environ.get("KDESERVE_KUBECTL", "kubectl"),
                        help="kubectl, for kustomize (default: $KDESERVE_KUBECTL or kubectl)")
    args = parser.parse_args(argv)
    failures = run(os.path.abspath(args.root), args.kubectl)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("deploy/k8s, deploy/kserve: both overlays, tools/ and the KServe manifests valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
