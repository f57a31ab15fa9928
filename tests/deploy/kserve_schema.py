"""The KServe schemas of validate_k8s.py: a strict validator of a KServe KSERVE_VERSION
ServingRuntime or InferenceService, built from the kserve wheel's openapi models with Kubernetes
types from kubernetes-validate's strict KUBERNETES_VERSION definitions (kserve_validator says how
and what it does not cover). Both pins live here; validate_k8s.py imports them."""

import ast
import functools
import importlib.metadata
import json
import os
import re

import jsonschema
import kubernetes_validate
import referencing

# The Kubernetes release whose API the manifests must fit (the preinstalled kubectl is 1.32).
KUBERNETES_VERSION = "1.32"
# The KServe release whose ServingRuntime and InferenceService the deploy/kserve manifests must
# fit: the pinned kserve wheel's openapi-generated models (kserve/models).
KSERVE_VERSION = "0.21.0"
# openapi-generator type names -> JSON schema, where they are neither a kserve model nor found by
# kubernetes_definition(); the two Knative types are strings on the wire.
OPENAPI_TYPES = {"str": {"type": "string"}, "int": {"type": "integer"},
                 "float": {"type": "number"}, "bool": {"type": "boolean"}, "object": {},
                 "datetime": {"type": "string"}, "date": {"type": "string"},
                 "KnativeURL": {"type": "string"}, "KnativeVolatileTime": {"type": "string"},
                 "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
                 "V1beta1MetricQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity"}


@functools.lru_cache(maxsize=None)
def kserve_models():
    """{class: ({JSON field: openapi type}, {required JSON fields})} of every model in the installed
    kserve's kserve/models, read with ast: importing kserve would import its model server."""
    folder = importlib.metadata.distribution("kserve").locate_file("kserve/models")
    models = {}
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        with open(os.path.join(folder, file)) as f:
            source = f.read()
        for c in ast.parse(source).body:
            assigned = {n.targets[0].id: n.value for n in getattr(c, "body", [])
                        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
            if isinstance(c, ast.ClassDef) and {"openapi_types", "attribute_map"} <= set(assigned):
                types, names = (ast.literal_eval(assigned[k]) for k in ("openapi_types",
                                                                        "attribute_map"))
                required = re.findall(r"Invalid value for `(\w+)`, must not be `None`",
                                      ast.get_source_segment(source, c))
                models[c.name] = ({names[k]: v for k, v in types.items()},
                                  {names[r] for r in required if r in names})
    return models


@functools.lru_cache(maxsize=None)
def kubernetes_definitions():
    """kubernetes-validate's strict KUBERNETES_VERSION definitions ($defs by their $id)."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
    with open(os.path.join(os.path.dirname(kubernetes_validate.__file__), folder,
                           "_definitions.json")) as f:
        return json.load(f)


def kubernetes_definition(name, definitions):
    """The Kubernetes definition an openapi-generator name stands for: V1Kind (core/v1 or
    meta/v1) or the fully qualified K8sIoApiAppsV1Kind; None if KUBERNETES_VERSION lacks it."""
    for key in definitions:
        parts = key.split(".")
        if name == "".join(p[:1].upper() + p[1:] for p in parts[1::-1] + parts[2:]):
            return key
    for prefix in ("io.k8s.api.core.v1.", "io.k8s.apimachinery.pkg.apis.meta.v1."):
        if name.startswith("V1") and prefix + name[2:] in definitions:
            return prefix + name[2:]
    return None


def no_schema(validator, name, instance, schema):
    yield jsonschema.ValidationError(
        f"{name} has no schema in Kubernetes {KUBERNETES_VERSION} or kserve {KSERVE_VERSION}")


KserveValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                               {"x-no-schema": no_schema})


def kserve_validator(version, kind):
    """A strict validator of serving.kserve.io/VERSION KIND, or an error message. PyPI has no
    KServe CRD files, so the schema is built from the kserve wheel's openapi-generated models
    (generated from the same Go types as the CRDs): every field of every object is known (any
    other is rejected) and typed (str, int, bool, list[...], dict(str, ...)); required where a
    model's setter refuses None. Kubernetes types (V1Container, V1Probe, ...) are $refs into
    kubernetes-validate's strict KUBERNETES_VERSION definitions, so a container field newer than
    that release fails too ("x-no-schema", as does a type the wheel does not define). Not
    covered: the CRDs' enums, patterns and minimums (the models do not carry them)."""
    models, k8s = kserve_models(), kubernetes_definitions()
    top = version[:1].upper() + version[1:] + kind
    if not {"apiVersion", "kind"} <= set(models.get(top, ({}, ()))[0]):
        return f"no schema for serving.kserve.io/{version} {kind} (kserve has no {top})"
    defs = {}

    def schema_of(name):
        if isinstance(OPENAPI_TYPES.get(name), dict):
            return OPENAPI_TYPES[name]
        inner = re.fullmatch(r"list\[(.+)\]|dict\(str, (.+)\)", name)
        if inner:
            return ({"type": "array", "items": schema_of(inner[1])} if inner[1] else
                    {"type": "object", "additionalProperties": schema_of(inner[2])})
        if name in models:
            if name not in defs:
                defs[name] = None
                fields, required = models[name]
                defs[name] = {"type": "object", "additionalProperties": False,
                              "properties": {k: schema_of(v) for k, v in fields.items()}}
                if required:
                    defs[name]["required"] = sorted(required)
            return {"$ref": f"#/$defs/{name}"}
        key = OPENAPI_TYPES.get(name) or kubernetes_definition(name, k8s["$defs"])
        return {"$ref": f"{k8s['$id']}#/$defs/{key}"} if key else {"x-no-schema": name}

    schema = dict(schema_of(top), **{"$defs": defs})
    KserveValidator.check_schema(schema)
    registry = referencing.Resource.from_contents(k8s) @ referencing.Registry()
    return KserveValidator(schema, registry=registry)
