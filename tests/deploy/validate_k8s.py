"""Renders deploy/k8s/overlays/{cpu,gpu} with `kubectl kustomize` and validates every object, and
the stand-alone manifests in deploy/k8s/tools, strictly (unknown fields rejected) against pinned
schemas:
  * Kubernetes objects: the Kubernetes KUBERNETES_VERSION schemas of kubernetes-validate
    ("-strict" flavour);
  * ServiceMonitor, PrometheusRule: the prometheus-operator PROMETHEUS_OPERATOR_VERSION CRD
    schemas, from the pydantic models of cloudcoil.models.prometheus_operator (generated from
    those CRDs), made strict at run time as kubernetes-json-schema's "-strict" flavour is.
An apiVersion/kind without a schema is a failure. It then checks what the schemas cannot: probes,
ports, selectors and references agree with each other and with the server config in the
ConfigMap, the drain fits in the termination grace period, the HPA's custom metric is the one
the prometheus-adapter rule provides, and the PrometheusRule holds the same groups as
deploy/prometheus/rules. (The real server parses the configs themselves in deploy_static_test.py.)

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

# The Kubernetes release whose API the manifests must fit (the preinstalled kubectl is 1.32).
KUBERNETES_VERSION = "1.32"
# The prometheus-operator release whose CRDs the ServiceMonitor and PrometheusRule must fit: the
# pinned cloudcoil.models.prometheus_operator 0.80.1.x is generated from its CRDs.
PROMETHEUS_OPERATOR_VERSION = "0.80.1"
# API group -> the package holding a pydantic model per kind, one module per version.
CRD_MODELS = {"monitoring.coreos.com": ("cloudcoil.models.prometheus_operator",
                                        PROMETHEUS_OPERATOR_VERSION)}
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

    # Probes: native gRPC, numeric port = the gRPC port; start-up and readiness on "readiness",
    # liveness on "" (never waits on the model queue).
    for probe, service in [("startupProbe", "readiness"), ("readinessProbe", "readiness"),
                           ("livenessProbe", "")]:
        grpc = dig(c, probe, "grpc")
        if not check(isinstance(grpc, dict), f"{overlay}: {probe} is not a grpc probe"):
            continue
        got = grpc.get("port")
        check(got == ports.get("grpc") and is_int(got),
              f"{overlay}: {probe} port {got} is not the grpc port {ports.get('grpc')}")
        got = grpc.get("service") or ""
        check(got == service, f"{overlay}: {probe} service '{got}', want '{service}'")
    period = dig(c, "startupProbe", "periodSeconds")
    threshold = dig(c, "startupProbe", "failureThreshold")
    check(is_number(period) and is_number(threshold) and period * threshold >= 300,
          f"{overlay}: startupProbe allows under 5 minutes for loading")

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

    # Drain: preStop sleep, then SIGTERM -> drain_delay, then shutdown grace; all inside the
    # termination grace period.
    pre_stop = dig(c, "lifecycle", "preStop")
    sleep = dig(pre_stop, "sleep", "seconds")
    if sleep is None:
        try:
            sleep = float(dig(pre_stop, "exec", "command", -1))
        except (TypeError, ValueError):
            sleep = None
    if not check(is_number(sleep) and 0 < sleep < float("inf"), f"{overlay}: a preStop sleep"):
        sleep = 0
    drain, shutdown = srv.get("drain_delay_seconds", 0), srv.get("shutdown_grace_seconds", 10)
    grace = pod_spec.get("terminationGracePeriodSeconds")
    if check(is_number(drain) and is_number(shutdown),
             f"{overlay}: server drain_delay_seconds {drain}, shutdown_grace_seconds {shutdown}"):
        needed = sleep + drain + shutdown
        needed = int(needed) if float(needed).is_integer() else needed
        check(is_number(grace) and grace > needed, f"{overlay}: terminationGracePeriodSeconds"
              f" {grace} <= preStop + drain + grace = {needed}")

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


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def run(root, kubectl="kubectl", out=sys.stdout, err=sys.stderr):
    """Validates ROOT/deploy/k8s; returns the failure messages (each also printed to `err`)."""
    report = Report(out, err)
    k8s = os.path.join(root, "deploy/k8s")
    report.say(f"schemas: Kubernetes {KUBERNETES_VERSION} (kubernetes-validate"
               f" {importlib.metadata.version('kubernetes-validate')}, strict), prometheus-operator"
               f" v{PROMETHEUS_OPERATOR_VERSION} CRDs (cloudcoil.models.prometheus_operator"
               f" {importlib.metadata.version('cloudcoil.models.prometheus_operator')}, strict)")
    for overlay in OVERLAYS:
        rendered = subprocess.run([kubectl, "kustomize", os.path.join(k8s, "overlays", overlay)],
                                  capture_output=True, text=True)
        if not report.check(rendered.returncode == 0,
                            f"{overlay}: kubectl kustomize failed: {rendered.stderr.strip()}"):
            continue
        objects = documents(rendered.stdout)
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
    print("deploy/k8s: both overlays and tools/ valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
