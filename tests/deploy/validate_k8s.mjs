// Renders deploy/k8s/overlays/{cpu,gpu} with `kubectl kustomize`, validates every object against
// the Kubernetes and prometheus-operator JSON schemas (npm kubernetes-models,
// @kubernetes-models/prometheus-operator), then checks what the schemas cannot: probes, ports,
// selectors and references agree with each other and with the server config in the ConfigMap,
// the drain fits in the termination grace period, the HPA's custom metric is the one the
// prometheus-adapter rule provides, and the PrometheusRule holds the same groups as
// deploy/prometheus/rules. (The real server parses the configs themselves in
// deploy_static_test.py.)
//
// usage: node tests/deploy/validate_k8s.mjs [REPO_ROOT]     (ctest: deploy_k8s)
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(process.argv[2] ?? path.join(here, "../.."));
const k8s = path.join(root, "deploy/k8s");
let failures = 0;

function check(ok, what) {
  if (!ok) {
    failures += 1;
    console.error(`FAIL ${what}`);
  }
  return ok;
}

// apiVersion -> the module exporting its kinds.
function modelModule(apiVersion) {
  if (apiVersion === "v1") return "kubernetes-models/v1";
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  }
  return `kubernetes-models/${apiVersion}`;
}

async function validateSchema(overlay, obj) {
  const where = `${overlay}: ${obj.kind}/${obj.metadata?.name}`;
  let mod;
  try {
    mod = await import(modelModule(obj.apiVersion));
  } catch (e) {
    return check(false, `${where}: no schema for ${obj.apiVersion} (${e.message})`);
  }
  const Model = mod[obj.kind];
  if (!check(typeof Model === "function", `${where}: no schema for kind ${obj.kind}`)) return false;
  try {
    new Model(obj).validate();
    return true;
  } catch (e) {
    return check(false, `${where}: schema: ${e.message}`);
  }
}

// JSON with sorted keys: kustomize reorders keys, which carries no meaning.
const canonical = (v) => JSON.stringify(v, (_, x) =>
  x && typeof x === "object" && !Array.isArray(x)
    ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x);
const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);
const port = (address) => Number(address.slice(address.lastIndexOf(":") + 1));
const host = (address) => address.slice(0, address.lastIndexOf(":"));

function semantic(overlay, objects) {
  const one = (kind, name) => {
    const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
    check(found.length === 1, `${overlay}: expected one ${kind}${name ? "/" + name : ""}, found ${found.length}`);
    return found[0];
  };
  for (const kind of ["Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment",
                      "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
                      "PrometheusRule"]) {
    one(kind);
  }
  const deploy = one("Deployment", "kdeserve");
  const services = objects.filter((o) => o.kind === "Service");
  check(services.length === 2, `${overlay}: expected the kdeserve and kdeserve-headless Services`);
  if (!deploy) return;
  const ns = objects.find((o) => o.kind === "Namespace")?.metadata.name;
  for (const o of objects) {
    if (o.kind !== "Namespace") check(o.metadata.namespace === ns, `${overlay}: ${o.kind}/${o.metadata.name} not in namespace ${ns}`);
  }

  const pod = deploy.spec.template;
  const podLabels = pod.metadata.labels;
  check(subset(deploy.spec.selector.matchLabels, podLabels), `${overlay}: Deployment selector does not match its pod labels`);
  const c = pod.spec.containers.find((x) => x.name === "kdeserve");
  if (!check(c, `${overlay}: no kdeserve container`)) return;
  const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
  check(ports.grpc && ports.metrics, `${overlay}: container ports named grpc and metrics`);

  // Probes: native gRPC, numeric port = the gRPC port; start-up and readiness on "readiness",
  // liveness on "" (never waits on the model queue).
  for (const [probe, service] of [["startupProbe", "readiness"], ["readinessProbe", "readiness"],
                                  ["livenessProbe", ""]]) {
    const p = c[probe];
    if (!check(p?.grpc, `${overlay}: ${probe} is not a grpc probe`)) continue;
    check(p.grpc.port === ports.grpc, `${overlay}: ${probe} port ${p.grpc.port} is not the grpc port ${ports.grpc}`);
    check((p.grpc.service ?? "") === service, `${overlay}: ${probe} service '${p.grpc.service ?? ""}', want '${service}'`);
  }
  const startup = c.startupProbe;
  check(startup.periodSeconds * startup.failureThreshold >= 300, `${overlay}: startupProbe allows under 5 minutes for loading`);

  // Non-root, read-only root filesystem.
  const psc = pod.spec.securityContext ?? {};
  const csc = c.securityContext ?? {};
  check(psc.runAsNonRoot === true && psc.runAsUser > 0, `${overlay}: pod must run as a numeric non-root user`);
  check(csc.readOnlyRootFilesystem === true, `${overlay}: readOnlyRootFilesystem`);
  check(csc.allowPrivilegeEscalation === false, `${overlay}: allowPrivilegeEscalation false`);
  check(c.volumeMounts.some((m) => m.mountPath === "/tmp"), `${overlay}: a writable /tmp with a read-only root`);

  // Config from the rendered ConfigMap.
  const cmVolume = pod.spec.volumes.find((v) => v.configMap);
  const cm = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === cmVolume?.configMap.name);
  if (!check(cm, `${overlay}: the config volume names no rendered ConfigMap`)) return;
  const configMount = c.volumeMounts.find((m) => m.name === cmVolume.name);
  const configArg = c.args[c.args.indexOf("--config") + 1];
  check(configArg === path.posix.join(configMount.mountPath, "server.yaml") && cm.data["server.yaml"],
        `${overlay}: --config ${configArg} is not the ConfigMap's server.yaml`);
  const config = yaml.load(cm.data["server.yaml"]);
  const srv = config.server;
  check(host(srv.listen) === "0.0.0.0" && port(srv.listen) === ports.grpc, `${overlay}: server.listen ${srv.listen} must be 0.0.0.0:${ports.grpc} (probes use the pod IP)`);
  check(host(srv.metrics_listen) === "0.0.0.0" && port(srv.metrics_listen) === ports.metrics, `${overlay}: server.metrics_listen ${srv.metrics_listen}`);

  // Drain: preStop sleep, then SIGTERM -> drain_delay, then shutdown grace; all inside the
  // termination grace period.
  const preStop = c.lifecycle?.preStop;
  const sleep = preStop?.sleep?.seconds ?? Number(preStop?.exec?.command?.at(-1));
  check(Number.isFinite(sleep) && sleep > 0, `${overlay}: a preStop sleep`);
  const needed = sleep + (srv.drain_delay_seconds ?? 0) + (srv.shutdown_grace_seconds ?? 10);
  check(pod.spec.terminationGracePeriodSeconds > needed, `${overlay}: terminationGracePeriodSeconds ${pod.spec.terminationGracePeriodSeconds} <= preStop + drain + grace = ${needed}`);

  // Weights from the PVC.
  const pvcVolume = pod.spec.volumes.find((v) => v.persistentVolumeClaim);
  const pvc = objects.find((o) => o.kind === "PersistentVolumeClaim");
  check(pvcVolume && pvc && pvcVolume.persistentVolumeClaim.claimName === pvc.metadata.name, `${overlay}: weights volume is not the rendered PVC`);
  const weightsMount = c.volumeMounts.find((m) => m.name === pvcVolume?.name);
  check(weightsMount?.readOnly === true, `${overlay}: weights mounted read-only`);
  for (const m of config.models) {
    check(m.weights?.startsWith(weightsMount?.mountPath + "/"), `${overlay}: model ${m.name} weights ${m.weights} not on the weights volume`);
  }

  // Accelerator: GPU limit (integer, limits; requests equal if set) and CUDA devices, or neither.
  const limits = c.resources?.limits ?? {};
  const requests = c.resources?.requests ?? {};
  const cpuLimit = limits.cpu ? Number(String(limits.cpu).replace(/m$/, "")) / (String(limits.cpu).endsWith("m") ? 1000 : 1) : undefined;
  check(limits.memory && requests.memory && requests.cpu, `${overlay}: cpu/memory requests and a memory limit`);
  check(!cpuLimit || srv.threads <= cpuLimit, `${overlay}: server.threads ${srv.threads} above the CPU limit ${cpuLimit}`);
  const gpus = limits["nvidia.com/gpu"];
  const devices = config.models.map((m) => m.device ?? "cpu");
  if (overlay === "gpu") {
    check(Number.isInteger(gpus) && gpus >= 1, `${overlay}: limits nvidia.com/gpu must be a whole number >= 1`);
    check(requests["nvidia.com/gpu"] === undefined || requests["nvidia.com/gpu"] === gpus, `${overlay}: GPU requests must equal limits`);
    check(devices.every((d) => d.startsWith("cuda")), `${overlay}: every model on a CUDA device (${devices})`);
    check(c.image.endsWith("-cuda"), `${overlay}: image ${c.image} is not the CUDA image`);
    check((pod.spec.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu"), `${overlay}: toleration for nvidia.com/gpu`);
  } else {
    check(gpus === undefined, `${overlay}: no GPU on the CPU overlay`);
    check(devices.every((d) => d === "cpu"), `${overlay}: every model on cpu (${devices})`);
    check(!c.image.endsWith("-cuda"), `${overlay}: image ${c.image} is the CUDA image`);
  }

  // Services select the pods and name their ports after the container's.
  for (const s of services) {
    check(subset(s.spec.selector, podLabels), `${overlay}: Service ${s.metadata.name} selects no pod`);
    for (const p of s.spec.ports) {
      check(ports[p.targetPort] !== undefined, `${overlay}: Service ${s.metadata.name} port ${p.name} targets unknown ${p.targetPort}`);
    }
    const grpc = s.spec.ports.find((p) => p.name === "grpc");
    check(grpc?.appProtocol === "grpc", `${overlay}: Service ${s.metadata.name} grpc port with appProtocol grpc`);
  }

  // The ServiceMonitor selects exactly the Service with the metrics port.
  const sm = objects.find((o) => o.kind === "ServiceMonitor");
  const selected = services.filter((s) => subset(sm.spec.selector.matchLabels, s.metadata.labels));
  if (check(selected.length === 1, `${overlay}: ServiceMonitor selects ${selected.length} Services, want 1`)) {
    for (const e of sm.spec.endpoints) {
      check(selected[0].spec.ports.some((p) => p.name === e.port), `${overlay}: ServiceMonitor port ${e.port} not on Service ${selected[0].metadata.name}`);
    }
    check(selected[0].metadata.labels[sm.spec.jobLabel] === "kdeserve", `${overlay}: ServiceMonitor jobLabel must give job="kdeserve" (the rules select it)`);
  }

  // HPA: scales this Deployment on the adapter's custom metric.
  const hpa = objects.find((o) => o.kind === "HorizontalPodAutoscaler");
  check(hpa.spec.scaleTargetRef.kind === "Deployment" && hpa.spec.scaleTargetRef.name === deploy.metadata.name, `${overlay}: HPA target`);
  check(hpa.spec.minReplicas <= hpa.spec.maxReplicas, `${overlay}: HPA min <= max`);
  check(hpa.spec.behavior?.scaleDown?.stabilizationWindowSeconds >= 300, `${overlay}: HPA scale-down stabilisation >= 300 s`);
  const adapter = yaml.load(fs.readFileSync(path.join(k8s, "prometheus-adapter/values.yaml"), "utf8"));
  const provided = adapter.rules.custom.map((r) => r.name.as);
  for (const m of hpa.spec.metrics) {
    check(m.type === "Pods" && provided.includes(m.pods.metric.name), `${overlay}: HPA metric ${m.pods?.metric.name} is not provided by prometheus-adapter (${provided})`);
  }
  const pdb = objects.find((o) => o.kind === "PodDisruptionBudget");
  check(subset(pdb.spec.selector.matchLabels, podLabels), `${overlay}: PodDisruptionBudget selects no pod`);

  // PrometheusRule = deploy/prometheus/rules/kdeserve.rules.yml.
  const rules = yaml.load(fs.readFileSync(path.join(root, "deploy/prometheus/rules/kdeserve.rules.yml"), "utf8"));
  const pr = objects.find((o) => o.kind === "PrometheusRule");
  check(canonical(pr.spec.groups) === canonical(rules.groups), `${overlay}: PrometheusRule groups differ from deploy/prometheus/rules/kdeserve.rules.yml`);

  return config;
}

for (const overlay of ["cpu", "gpu"]) {
  const rendered = execFileSync("kubectl", ["kustomize", path.join(k8s, "overlays", overlay)], { encoding: "utf8" });
  const objects = yaml.loadAll(rendered).filter(Boolean);
  let valid = 0;
  for (const o of objects) if (await validateSchema(overlay, o)) valid += 1;
  const config = semantic(overlay, objects);
  console.log(`${overlay}: ${objects.length} objects rendered, ${valid} schema-valid (${objects.map((o) => o.kind).join(", ")}); ${config?.models.length ?? 0} models configured`);
}
// Stand-alone manifests (deploy/k8s/tools): schema-valid, and aimed at the rendered objects.
for (const file of fs.readdirSync(path.join(k8s, "tools")).filter((f) => f.endsWith(".yaml"))) {
  for (const o of yaml.loadAll(fs.readFileSync(path.join(k8s, "tools", file), "utf8")).filter(Boolean)) {
    await validateSchema(`tools/${file}`, o);
    const claims = (o.spec?.volumes ?? []).map((v) => v.persistentVolumeClaim?.claimName).filter(Boolean);
    for (const claim of claims) check(claim === "kdeserve-weights", `tools/${file}: claim ${claim}`);
    check(o.metadata.namespace === "kdeserve", `tools/${file}: namespace`);
  }
  console.log(`tools/${file}: checked`);
}
if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log("deploy/k8s: both overlays valid");
