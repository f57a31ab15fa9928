"""validate_k8s.py fails on broken copies of deploy/: each case copies the tree to a temporary
directory, breaks one thing and expects exactly the failures of the check that guards it (for both
overlays where both render the broken part); the unmodified copy passes.

Run by ctest (deploy_k8s_test, label unit) with the project venv's python, like validate_k8s.py.
Environment: KDESERVE_KUBECTL (default: kubectl on PATH)."""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate_k8s  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
KUBECTL = os.environ.get("KDESERVE_KUBECTL", "kubectl")
BOTH = validate_k8s.OVERLAYS

DEPLOYMENT = "deploy/k8s/base/deployment.yaml"
SERVICE_MONITOR = "deploy/k8s/base/servicemonitor.yaml"
PROMETHEUS_RULE = "deploy/k8s/base/prometheusrule.yaml"
RULES_FILE = "deploy/prometheus/rules/kdeserve.rules.yml"
TOOLS_POD = "deploy/k8s/tools/weights-loader.yaml"
RUNTIME = "deploy/kserve/servingruntime.yaml"
ISVC = "deploy/kserve/inferenceservice.yaml"
KSERVE = "deploy/kserve/kustomization.yaml"
LIVENESS_PORT = "grpc:\n              port: 8500\n            periodSeconds: 10"
STARTUP_PORT = ("grpc:\n              port: 8500\n              service: readiness\n"
                "            periodSeconds: 5\n            timeoutSeconds: 3\n"
                "            failureThreshold: 120")


class Validator(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="kdeserve-validate-k8s-")
        self.addCleanup(self.tmp.cleanup)
        self.root = self.tmp.name
        shutil.copytree(os.path.join(ROOT, "deploy"), os.path.join(self.root, "deploy"))

    def edit(self, rel, old, new):
        path = os.path.join(self.root, rel)
        with open(path) as f:
            text = f.read()
        self.assertEqual(text.count(old), 1, f"{rel}: want exactly one {old!r}")
        with open(path, "w") as f:
            f.write(text.replace(old, new))

    def failures(self):
        return validate_k8s.run(self.root, KUBECTL, out=io.StringIO(), err=io.StringIO())

    def assert_fails_with(self, *expected, overlays=BOTH):
        """The validator fails with each expected message (per overlay where it starts with '{}:')
        and with nothing else."""
        wanted = [e.format(o) for e in expected for o in (overlays if "{}" in e else [None])]
        got = self.failures()
        for want in wanted:
            self.assertTrue(any(want in g for g in got), f"no failure {want!r} in {got}")
        for g in got:
            self.assertTrue(any(want in g for want in wanted), f"unexpected failure {g!r}")

    def test_unmodified_copy_passes(self):
        self.assertEqual(self.failures(), [])

    def test_command_line_exit_status(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate_k8s.py")
        command = [sys.executable, script, "--kubectl", KUBECTL, self.root]
        ok = subprocess.run(command, capture_output=True, text=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("cpu: 10 objects rendered, 10 schema-valid", ok.stdout)
        self.assertIn("kserve: 2 objects rendered, 2 schema-valid", ok.stdout)
        self.assertTrue(ok.stdout.rstrip().endswith("valid"), ok.stdout)
        self.edit(TOOLS_POD, "namespace: kdeserve", "namespace: default")
        broken = subprocess.run(command, capture_output=True, text=True)
        self.assertEqual(broken.returncode, 1, broken.stdout)
        self.assertIn("FAIL tools/weights-loader.yaml: namespace", broken.stderr)
        self.assertIn("1 check(s) failed", broken.stderr)

    # Cross-checks (the schemas cannot see these).

    def test_probe_port_is_not_the_grpc_port(self):
        self.edit(DEPLOYMENT, LIVENESS_PORT, LIVENESS_PORT.replace("8500", "8501"))
        self.assert_fails_with("{}: livenessProbe port 8501 is not the grpc port 8500")

    def test_drain_exceeds_the_termination_grace_period(self):
        # preStop 5 + drain_delay 5 + shutdown grace 30 = 40: the grace period must exceed it.
        self.edit(DEPLOYMENT, "terminationGracePeriodSeconds: 60",
                  "terminationGracePeriodSeconds: 40")
        self.assert_fails_with(
            "{}: terminationGracePeriodSeconds 40 <= preStop + drain + grace = 40")

    def test_drain_uses_the_server_config(self):
        self.edit("deploy/k8s/overlays/gpu/server.yaml", "shutdown_grace_seconds: 30",
                  "shutdown_grace_seconds: 55")
        self.assert_fails_with(
            "{}: terminationGracePeriodSeconds 60 <= preStop + drain + grace = 65",
            overlays=["gpu"])

    def test_hpa_metric_not_provided_by_the_adapter_rule(self):
        self.edit("deploy/k8s/prometheus-adapter/values.yaml", 'as: "kdeserve_queue_depth"',
                  'as: "kdeserve_queue_length"')
        self.assert_fails_with("{}: HPA metric kdeserve_queue_depth is not provided by"
                               " prometheus-adapter (kdeserve_queue_length)")

    def test_prometheus_rule_differs_from_the_rules_file(self):
        self.edit(RULES_FILE, "for: 2m", "for: 3m")
        self.assert_fails_with(
            "{}: PrometheusRule groups differ from deploy/prometheus/rules/kdeserve.rules.yml")

    def test_tools_manifest_with_the_wrong_claim(self):
        self.edit(TOOLS_POD, "claimName: kdeserve-weights", "claimName: weights")
        self.assert_fails_with("tools/weights-loader.yaml: claim weights")

    # Kubernetes schemas (strict, KUBERNETES_VERSION).

    def test_unknown_field_in_the_deployment(self):
        self.edit(DEPLOYMENT, "imagePullPolicy: IfNotPresent", "pullPolicy: IfNotPresent")
        self.assert_fails_with(
            "{}: Deployment/kdeserve: schema: $.spec.template.spec.containers[0]: Additional"
            " properties are not allowed ('pullPolicy' was unexpected)")

    def test_named_port_in_a_grpc_probe(self):
        self.edit(DEPLOYMENT, STARTUP_PORT, STARTUP_PORT.replace("port: 8500", "port: grpc"))
        self.assert_fails_with(
            "{}: Deployment/kdeserve: schema:"
            " $.spec.template.spec.containers[0].startupProbe.grpc.port: 'grpc' is not of type"
            " 'integer'",
            "{}: startupProbe port grpc is not the grpc port 8500")

    def test_unknown_field_in_the_tools_pod(self):
        self.edit(TOOLS_POD, "restartPolicy: Never", "restartPolicy: Never\n  restart: Never")
        self.assert_fails_with(
            "tools/weights-loader.yaml: Pod/kdeserve-weights-loader: schema: $.spec:"
            " Additional properties are not allowed ('restart' was unexpected)")

    def test_api_version_without_a_schema(self):
        self.edit("deploy/k8s/base/pdb.yaml", "apiVersion: policy/v1", "apiVersion: policy/v1beta1")
        self.assert_fails_with(
            "{}: PodDisruptionBudget/kdeserve: schema: no schema for policy/v1beta1"
            f" PodDisruptionBudget in Kubernetes {validate_k8s.KUBERNETES_VERSION}")

    # prometheus-operator CRD schemas (strict, PROMETHEUS_OPERATOR_VERSION).

    def test_unknown_field_in_the_service_monitor(self):
        self.edit(SERVICE_MONITOR, "scrapeTimeout: 10s",
                  "scrapeTimeout: 10s\n      scrapeInterval: 15s")
        self.assert_fails_with(
            "{}: ServiceMonitor/kdeserve: schema: $.spec.endpoints[0]: Additional"
            " properties are not allowed ('scrapeInterval' was unexpected)")

    def test_wrong_type_in_the_service_monitor(self):
        self.edit(SERVICE_MONITOR, "interval: 15s", "interval: 15")
        self.assert_fails_with("{}: ServiceMonitor/kdeserve: schema: $.spec.endpoints[0].interval:"
                               " 15 is not of type 'string'")

    def test_unknown_field_in_the_prometheus_rule(self):
        # In both rule sets, so that only the schema sees it.
        for rel, indent in [(PROMETHEUS_RULE, "          "), (RULES_FILE, "        ")]:
            self.edit(rel, f"for: 2m\n{indent}labels:",
                      f"for: 2m\n{indent}keep_firing: 5m\n{indent}labels:")
        self.assert_fails_with(
            "{}: PrometheusRule/kdeserve: schema: $.spec.groups[1].rules[0]:"
            " Additional properties are not allowed ('keep_firing' was unexpected)")

    def test_wrong_type_in_the_prometheus_rule(self):
        for rel in [PROMETHEUS_RULE, RULES_FILE]:
            self.edit(rel, "for: 2m", "for: 120")
        self.assert_fails_with("{}: PrometheusRule/kdeserve: schema: $.spec.groups[1].rules[0].for:"
                               " 120 is not of type 'string'")

    def test_crd_version_without_a_schema(self):
        self.edit(SERVICE_MONITOR, "apiVersion: monitoring.coreos.com/v1",
                  "apiVersion: monitoring.coreos.com/v2")
        self.assert_fails_with(
            "{}: ServiceMonitor/kdeserve: schema: no schema for monitoring.coreos.com/v2"
            " (cloudcoil.models.prometheus_operator has no v2)")


    # KServe cross-checks (deploy/kserve against the image's config and deploy/k8s).

    def test_kserve_port_is_not_the_listen_port(self):
        self.edit("deploy/config/server.yaml", "listen: 0.0.0.0:8500", "listen: 0.0.0.0:8501")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: h2c containerPort 8500 is not"
                               " server.listen 0.0.0.0:8501 (deploy/config/server.yaml and args)")

    def test_kserve_port_is_not_named_h2c(self):
        self.edit(RUNTIME, "- name: h2c", "- name: grpc")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: kserve-container with one port,"
                               " named h2c (KServe's name for gRPC)")

    def test_kserve_probe_port_is_not_the_h2c_port(self):
        self.edit(RUNTIME, 'port: 8500                # ""', 'port: 8501                # ""')
        self.assert_fails_with(
            "kserve: ServingRuntime/kdeserve: livenessProbe port 8501 is not the h2c port 8500")

    def test_kserve_metrics_annotation_is_not_the_metrics_port(self):
        self.edit(RUNTIME, 'prometheus.kserve.io/port: "8502"', 'prometheus.kserve.io/port: "9091"')
        self.assert_fails_with(
            "kserve: ServingRuntime/kdeserve: annotations prometheus.kserve.io/port do not name"
            " server.metrics_listen 0.0.0.0:8502's port and /metrics")

    def test_kserve_prometheus_scraping_in_standard_mode(self):
        self.edit(ISVC, 'enable-prometheus-scraping: "false"', 'enable-prometheus-scraping: "true"')
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: enable-prometheus-scraping true, want false")

    def test_kserve_writable_root_filesystem(self):
        self.edit(RUNTIME, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: a numeric non-root user,"
                               " read-only root, no privilege escalation")

    def test_kserve_knative_mode(self):
        self.edit(ISVC, "deploymentMode: Standard", "deploymentMode: Knative")
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: deploymentMode Knative, want Standard")

    def test_kserve_drain_exceeds_the_termination_grace_period(self):
        # preStop 5 + the image config's drain_delay 0 + shutdown grace 10 = 15.
        self.edit(ISVC, "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 15")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: terminationGracePeriodSeconds 15"
                               " <= preStop + drain + grace = 15")

    def test_kserve_threads_above_the_cpu_limit(self):
        self.edit(RUNTIME, '"--threads", "4"', '"--threads", "8"')
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: server threads 8 not within the CPU limit 4")

    def test_kserve_image_is_not_the_deploy_k8s_image(self):
        self.edit(KSERVE, "newTag: 0.1.0", "newTag: 0.1.0-cuda")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: image kdeserve:0.1.0-cuda is not"
                               " deploy/k8s's kdeserve:0.1.0")

    def test_kserve_runtime_does_not_exist(self):
        self.edit(ISVC, "runtime: kdeserve", "runtime: kdeserve-grpc")
        self.assert_fails_with("kserve: InferenceService/kdeserve: runtime kdeserve-grpc is not a"
                               " ServingRuntime here (kdeserve)")

    def test_kserve_model_format_is_not_supported(self):
        self.edit(ISVC, "modelFormat:\n        name: kdeserve",
                  "modelFormat:\n        name: pytorch")
        self.assert_fails_with("kserve: InferenceService/kdeserve: modelFormat pytorch is not a"
                               " supportedModelFormat of ServingRuntime/kdeserve (kdeserve)")

    def test_kserve_rest_protocol(self):
        self.edit(ISVC, "protocolVersion: grpc-v2", "protocolVersion: v2")
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: protocolVersion v2, want grpc-v2")

    def test_kserve_runtime_claims_rest(self):
        self.edit(RUNTIME, "protocolVersions: [grpc-v2]", "protocolVersions: [v2, grpc-v2]")
        self.assert_fails_with(
            "kserve: ServingRuntime/kdeserve: protocolVersions ['v2', 'grpc-v2'], want [grpc-v2]")

    def test_kserve_pods_selected_by_deploy_k8s(self):
        self.edit(KSERVE, "app.kubernetes.io/component: kserve",
                  "app.kubernetes.io/component: inference")
        self.assert_fails_with(*(
            f"kserve: InferenceService/kdeserve: its pods carry the selector of deploy/k8s's {o}"
            for o in ["Service/kdeserve", "Service/kdeserve-headless",
                      "PodDisruptionBudget/kdeserve"]))

    # KServe schemas (strict, KSERVE_VERSION, Kubernetes types at KUBERNETES_VERSION).

    def test_unknown_field_in_the_serving_runtime(self):
        self.edit(RUNTIME, "multiModel: false", "multimodel: false")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: schema: $.spec: Additional"
                               " properties are not allowed ('multimodel' was unexpected)")

    def test_unknown_field_in_the_serving_runtime_container(self):
        self.edit(RUNTIME, "imagePullPolicy: IfNotPresent", "pullPolicy: IfNotPresent")
        self.assert_fails_with(
            "kserve: ServingRuntime/kdeserve: schema: $.spec.containers[0]: Additional properties"
            " are not allowed ('pullPolicy' was unexpected)")

    def test_wrong_type_in_the_inference_service(self):
        self.edit(ISVC, "scaleTarget: 80", 'scaleTarget: "80"')
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: schema: $.spec.predictor.scaleTarget: '80' is not"
            " of type 'integer'")

    def test_container_field_newer_than_the_kubernetes_version(self):
        self.edit(ISVC, "runtime: kdeserve\n", "runtime: kdeserve\n      restartPolicyRules:"
                  " [{action: Restart, exitCodes: {operator: In, values: [42]}}]\n")
        self.assert_fails_with(
            "kserve: InferenceService/kdeserve: schema:"
            " $.spec.predictor.model.restartPolicyRules[0]: V1ContainerRestartRule has no schema"
            f" in Kubernetes {validate_k8s.KUBERNETES_VERSION} or kserve"
            f" {validate_k8s.KSERVE_VERSION}")

    def test_kserve_version_without_a_schema(self):
        self.edit(RUNTIME, "apiVersion: serving.kserve.io/v1alpha1",
                  "apiVersion: serving.kserve.io/v1beta1")
        self.assert_fails_with("kserve: ServingRuntime/kdeserve: schema: no schema for"
                               " serving.kserve.io/v1beta1 ServingRuntime (kserve has no"
                               " V1beta1ServingRuntime)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
