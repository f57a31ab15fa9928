#!/usr/bin/python3
"""The monitoring artefacts against the real thing: kdeserve-server hosting the models of
deploy/config/server.yaml, scraped by a real Prometheus that loads deploy/prometheus/rules.
Every metric name in the Grafana dashboard, the rules, the prometheus-adapter rule and the HPA
must be one the server exports; every dashboard query, variable query and the adapter's query
must evaluate in Prometheus with data (the test provokes a queue-deadline failure); every
recording rule must produce samples and every rule must evaluate without error.

Run by ctest (deploy_monitoring_test, label integration) with /usr/bin/python3. Environment as
tests/integration/integration_test.py (whose Server helper this reuses)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import grpc
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))

from integration_test import (DOG, PROMETHEUS, SERVER, Server, free_port, pb,  # noqa: E402
                              read)

DEPLOY = os.path.join(ROOT, "deploy")


def load_yaml(rel):
    with open(os.path.join(DEPLOY, rel)) as f:
        return yaml.safe_load(f)


def grafana_to_promql(expr):
    """A dashboard query as Grafana sends it with every variable at "All"."""
    return (expr.replace("$__rate_interval", "1m").replace("$model", ".*")
            .replace("$instance", ".*"))


def metric_names(expr):
    """kdeserve_* metric names a PromQL expression reads (recorded series, with ':', excluded)."""
    names = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r'"[^"]*"', '""', expr))
    return {n for n in names if n.startswith("kdeserve_") and ":" not in n}


def dashboard_queries():
    with open(os.path.join(DEPLOY, "grafana/dashboards/kdeserve.json")) as f:
        dash = json.load(f)
    queries = [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row"
               for t in p["targets"]]
    variables = [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return queries, variables


def rule_list():
    return [r for g in load_yaml("prometheus/rules/kdeserve.rules.yml")["groups"]
            for r in g["rules"]]


def adapter_rules():
    return load_yaml("k8s/prometheus-adapter/values.yaml")["rules"]["custom"]


def exported_names(text):
    """Sample names and family names in a /metrics exposition."""
    samples, families = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return samples, families


@unittest.skipUnless(SERVER and os.path.exists(SERVER) and os.path.exists(PROMETHEUS),
                     "KDESERVE_SERVER or prometheus missing")
class MonitoringAgainstLiveServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        models = load_yaml("config/server.yaml")["models"]
        for m in models:  # every approximate batch shadow-checked: the quality panels get data
            m["shadow"] = {"fraction": 1.0, "max_compute_share": 1.0}
        snippets = ["".join("  " + line + "\n"
                            for line in yaml.safe_dump([m], sort_keys=False).splitlines())
                    for m in models]
        cls.model_names = [m["name"] for m in models]
        cls.server = Server(snippets)
        cls.workdir = tempfile.mkdtemp(prefix="kdeserve-mon-")
        cls.web_port = free_port()
        cls.prom = None
        try:
            cls.start_prometheus()
            cls.make_traffic()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start_prometheus(cls):
        # deploy/prometheus/prometheus.yml, pointed at this server, scraping and evaluating every
        # second; the rule files are the deployment's own.
        config = load_yaml("prometheus/prometheus.yml")
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [os.path.join(DEPLOY, "prometheus", f) for f in config["rule_files"]]
        for job in config["scrape_configs"]:
            if job["job_name"] == "kdeserve":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{cls.server.metrics_port}"]}]
            else:
                job["static_configs"] = [{"targets": [f"127.0.0.1:{cls.web_port}"]}]
        path = os.path.join(cls.workdir, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        cls.prom_log = open(os.path.join(cls.workdir, "prometheus.log"), "w")
        cls.prom = subprocess.Popen([PROMETHEUS, f"--config.file={path}",
                                     f"--storage.tsdb.path={cls.workdir}/data",
                                     f"--web.listen-address=127.0.0.1:{cls.web_port}"],
                                    stdout=cls.prom_log, stderr=subprocess.STDOUT)
        cls.wait_for(lambda: cls.query('up{job="kdeserve"} == 1'), "the first scrape")

    @classmethod
    def make_traffic(cls):
        # Traffic after the first scrape, so rate() sees it increase: both attention modes, both
        # RPCs, and a caller error (NOT_FOUND) for the code label.
        stub = cls.server.stub
        image = pb.ImageInput(encoded=read(DOG))
        for attention in [pb.ATTENTION_MODE_EXACT, pb.ATTENTION_MODE_KDEFORMER] * 2:
            stub.Classify(pb.ClassifyRequest(model=cls.model_names[0], top_k=1, images=[image],
                                             attention=attention), timeout=120)
            stub.Generate(pb.GenerateRequest(model=cls.model_names[1], attention=attention,
                                             items=[pb.GenerateItem(class_id=1, seed=1)]),
                          timeout=120)
        try:
            stub.Classify(pb.ClassifyRequest(model="no_such_model", images=[image]), timeout=30)
        except grpc.RpcError:
            pass
        # A request whose deadline passes in the queue, behind a batch on the compute thread:
        # a DEADLINE_EXCEEDED code and a rejection, so the failure panels have data too.
        busy = stub.Generate.future(pb.GenerateRequest(
            model=cls.model_names[1], items=[pb.GenerateItem(class_id=i, seed=i) for i in range(4)]),
            timeout=120)
        time.sleep(0.2)
        try:
            stub.Classify(pb.ClassifyRequest(model=cls.model_names[0], images=[image]), timeout=0.1)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        busy.result()
        # Approximate batches with nothing queued behind them: their shadow checks run (one
        # model at a time, each waited for), so the shadow rules and panels have data.
        run = 'kdeserve_shadow_checks_total{{outcome="run",model="{}"}} > 0'
        stub.Classify(pb.ClassifyRequest(model=cls.model_names[0], images=[image],
                                         attention=pb.ATTENTION_MODE_KDEFORMER), timeout=120)
        cls.wait_for(lambda: cls.query(run.format(cls.model_names[0])), "a classifier shadow check")
        stub.Generate(pb.GenerateRequest(model=cls.model_names[1],
                                         attention=pb.ATTENTION_MODE_KDEFORMER,
                                         items=[pb.GenerateItem(class_id=2, seed=2)]), timeout=120)
        cls.wait_for(lambda: cls.query(run.format(cls.model_names[1])), "a generator shadow check")
        cls.wait_for(lambda: cls.query('sum(increase(kdeserve_requests_total{code="OK"}[1m])) > 0')
                     and cls.query('increase(kdeserve_rejected_total{reason="deadline"}[1m]) > 0')
                     and cls.query("model:kdeserve_request_errors:ratio_rate5m > 0"),
                     "the traffic, the expired deadline and the recording rules")

    @classmethod
    def tearDownClass(cls):
        if cls.prom:
            cls.prom.terminate()
            cls.prom.wait(timeout=30)
            cls.prom_log.close()
        cls.server.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    @classmethod
    def api(cls, endpoint, **params):
        url = f"http://127.0.0.1:{cls.web_port}/api/v1/{endpoint}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body["status"] != "success":
            raise AssertionError(f"{endpoint} {params}: {body}")
        return body["data"]

    @classmethod
    def query(cls, expr):
        return cls.api("query", query=expr)["result"]

    @classmethod
    def wait_for(cls, condition, what, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never showed {what}")

    def test_every_metric_name_used_is_exported(self):
        samples, families = exported_names(self.server.metrics())
        queries, variables = dashboard_queries()
        used = {}
        for title, expr in queries:
            used.update({n: f"dashboard panel '{title}'" for n in metric_names(expr)})
        for expr in variables:
            used.update({n: "dashboard variable" for n in metric_names(expr)})
        for rule in rule_list():
            used.update({n: f"rule {rule.get('record') or rule.get('alert')}"
                         for n in metric_names(rule["expr"])})
        for rule in adapter_rules():
            used.update({n: "prometheus-adapter rule" for n in metric_names(rule["seriesQuery"])})
            used[rule["name"]["as"]] = "prometheus-adapter metric"
        hpa = load_yaml("k8s/base/hpa.yaml")
        for m in hpa["spec"]["metrics"]:
            used[m["pods"]["metric"]["name"]] = "HorizontalPodAutoscaler"
        missing = {name: where for name, where in used.items() if name not in samples}
        self.assertFalse(missing, f"not exported by kdeserve-server: {missing}")
        # And the dashboard shows every family the server exports.
        on_dashboard = set().union(*(metric_names(e) for _, e in queries))
        shown = {f for f in families if f.startswith("kdeserve_") and
                 any(n == f or n.startswith(f + "_") for n in on_dashboard)}
        self.assertEqual(shown, {f for f in families if f.startswith("kdeserve_")})

    def test_dashboard_queries_evaluate(self):
        queries, variables = dashboard_queries()
        empty = []
        for title, expr in queries:
            result = self.query(grafana_to_promql(expr))
            if not result:
                empty.append(f"{title}: {expr}")
        self.assertFalse(empty, "queries without data")
        for expr in variables:
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
            selector = grafana_to_promql(match.group(1))
            values = self.api(f"label/{match.group(2)}/values", **{"match[]": selector})
            self.assertTrue(values, expr)
            if match.group(2) == "model":
                self.assertEqual(sorted(values), sorted(self.model_names))

    def test_recording_rules_produce_samples_and_no_rule_fails(self):
        for rule in rule_list():
            if "record" in rule:
                self.wait_for(lambda: self.query(rule["record"]), f"samples of {rule['record']}",
                              timeout=30)
        groups = self.api("rules")["groups"]
        evaluated = [r for g in groups for r in g["rules"]]
        self.assertEqual(len(evaluated), len(rule_list()))
        for r in evaluated:
            self.assertEqual(r["health"], "ok", r)
            if r["type"] == "alerting":
                self.assertNotEqual(r["state"], "firing", r["name"])
        ratio = {s["metric"]["model"]: float(s["value"][1])
                 for s in self.query("model:kdeserve_request_errors:ratio_rate5m")}
        self.assertEqual(ratio[self.model_names[1]], 0.0)   # no errors: 0, not missing
        self.assertGreater(ratio[self.model_names[0]], 0.0)  # the expired deadline

    def test_prometheus_adapter_query(self):
        for rule in adapter_rules():
            metric = rule["name"]["as"]
            expr = (rule["metricsQuery"].replace("<<.Series>>", metric)
                    .replace("<<.LabelMatchers>>", 'job="kdeserve"')
                    .replace("<<.GroupBy>>", "instance"))
            result = self.query(expr)
            self.assertEqual(len(result), 1, expr)
            self.assertEqual(result[0]["metric"]["instance"],
                             f"127.0.0.1:{self.server.metrics_port}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
