#!/usr/bin/env python3
"""Renders every helm/examples/*.yaml with the real Helm library and checks
what comes out.

  helm/rallypoint         with each region example (us-east.yaml, ...)
  the official NATS chart with each NATS example (nats-*.yaml), the copy in
                          shared/vendor/nats-chart beside the repository

For each example: the values pass the chart's values.schema.json, the chart
renders (`helm template`) and lints clean (`helm lint --strict`, Kubernetes
1.31), and every manifest validates strictly (no unknown fields) against the
Kubernetes 1.31 schemas. On top of what the schemas can say, it checks what
the API server or the kubelet would refuse or silently get wrong: duplicate
YAML keys, duplicate objects, invalid names and port names, Services and
disruption budgets that select no pod, Service target ports and probe ports
that no container has, and (in our chart) fields rendered as null.

Helm is helm-python-sdk (Helm v4's Go library, no helm binary); the schemas
come with kubernetes-validate. Both are installed by `scripts/setup.sh test`.
lab/tests/helm_render.rs runs this as part of the test suite.

  python3 helm/tools/render.py [--chart DIR] [--nats-chart DIR]
                               [--examples DIR] [--out DIR]

Exits 0 when everything passes, 1 with every problem listed otherwise, 2
when a tool or a chart is missing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

KUBERNETES = "1.31.0"
NAMESPACE = "rallypoint"
# Release names as in helm/README.md's install commands.
RELEASES = {"rallypoint": "rallypoint", "nats": "nats"}
# Besides the examples, our chart with nothing but its required values: the
# other side of every switch the examples set (HS256 instead of Ed25519, no
# GeoIP database, not central).
MINIMAL = {
    "region": "minimal",
    "jwt": {"algorithm": "hs256", "secretRef": {"name": "rallypoint-jwt"}},
    "relay": {"wt": {"tls": {"secretName": "relay-wt-tls"}}},
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

REPO = Path(__file__).resolve().parents[2]

try:
    import yaml
    import helm_python as helm
    from kubernetes_validate import utils as kv
except ImportError as missing:
    print(
        f"helm check: {missing.name} is not installed (pip: helm-python-sdk, "
        "kubernetes-validate, PyYAML); run `scripts/setup.sh test`",
        file=sys.stderr,
    )
    sys.exit(2)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings may not repeat a key: PyYAML keeps the last one
    silently, the API server's strict decoding refuses the object."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def describe(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def nulls(value, path=""):
    """Paths of fields rendered as null (`volumes:` with nothing under it)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if item is None:
                yield here
            else:
                yield from nulls(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from nulls(item, f"{path}[{i}]")


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in WORKLOADS:
        return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    if obj.get("kind") == "Pod":
        return obj.get("spec") or {}
    return None


def pod_labels(obj: dict) -> dict:
    if obj.get("kind") == "Pod":
        return (obj.get("metadata") or {}).get("labels") or {}
    template = (obj.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def containers(spec: dict) -> list[dict]:
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def api_checks(objects: list[dict], no_nulls: bool) -> list[str]:
    """What the API server or the kubelet would refuse or get wrong, beyond
    the OpenAPI schemas."""
    problems = []
    for (kind, name), n in Counter(
        (o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects
    ).items():
        if n > 1:
            problems.append(f"{kind}/{name} is rendered {n} times")

    workloads = [o for o in objects if pod_spec(o) is not None]
    for obj in objects:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        what = describe(obj)
        if no_nulls:
            problems += [f"{what}: {p} is null (an empty block?)" for p in nulls(obj)]
        pattern, limit = (DNS_1035, 63) if obj.get("kind") == "Service" else (DNS_SUBDOMAIN, 253)
        if not pattern.match(name) or len(name) > limit:
            problems.append(f"{what}: not a valid {obj.get('kind')} name")
        for key, value in {**(meta.get("labels") or {}), **pod_labels(obj)}.items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append(f"{what}: label {key}={value!r} is not a valid label value")

        spec = pod_spec(obj)
        if spec is not None:
            if obj.get("kind") != "Pod":
                selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                if not selector.items() <= pod_labels(obj).items():
                    problems.append(f"{what}: selector {selector} does not match its pod labels")
            seen = set()
            for c in containers(spec):
                names = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
                for port in names:
                    if len(port) > 15 or not PORT_NAME.match(port) or "--" in port \
                            or not re.search("[a-z]", port):
                        problems.append(f"{what}: container {c.get('name')}: port name {port!r} is invalid")
                    if port in seen:
                        problems.append(f"{what}: port name {port!r} is used twice in the pod")
                    seen.add(port)
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    handler = c.get(probe) or {}
                    for kind in ("httpGet", "tcpSocket", "grpc"):
                        port = (handler.get(kind) or {}).get("port")
                        if isinstance(port, str) and port not in names:
                            problems.append(
                                f"{what}: container {c.get('name')}: {probe} uses port "
                                f"{port!r}, which it does not have (ports: {sorted(names)})"
                            )

        if obj.get("kind") in ("Service", "PodDisruptionBudget"):
            spec_ = obj.get("spec") or {}
            selector = spec_.get("selector") or {}
            if obj.get("kind") == "PodDisruptionBudget":
                selector = selector.get("matchLabels") or {}
            if not selector:
                continue
            selected = [w for w in workloads if selector.items() <= pod_labels(w).items()]
            if not selected:
                problems.append(f"{what}: selector {selector} matches no pod of this release")
                continue
            if obj.get("kind") != "Service":
                continue
            for port in spec_.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                protocol = port.get("protocol", "TCP")
                found = any(
                    (p.get("name") == target if isinstance(target, str)
                     else p.get("containerPort") == target)
                    and p.get("protocol", "TCP") == protocol
                    for w in selected
                    for c in containers(pod_spec(w))
                    for p in c.get("ports") or []
                )
                if not found:
                    problems.append(
                        f"{what}: port {port.get('name') or port.get('port')} targets "
                        f"{target!r}/{protocol}, which no selected container has "
                        f"({', '.join(describe(w) for w in selected)})"
                    )
    return problems


def check(chart_dir: Path, name: str, values: dict, release: str, our_chart: bool,
          out: Path | None):
    """(manifest count, kinds, problems) of one values document on one chart."""
    problems: list[str] = []
    with helm.Chart.load(chart_dir) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            return 0, Counter(), [f"values do not pass the chart's schema: {e}"]
        try:
            rendered = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            return 0, Counter(), [f"helm template failed: {e}"]

    report = helm.lint(
        chart_dir, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES}"
    )
    for message in report.get("messages") or []:
        # 1 info (e.g. "icon is recommended"), 2 warning, 3 error; --strict
        # fails on warnings.
        if message.get("severity", 0) >= 2:
            problems.append(f"helm lint: {message.get('path')}: {message.get('error')}")
    problems += [f"helm lint: {e}" for e in report.get("errors") or []]

    objects = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        if out is not None:
            target = out / name / template
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            docs = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{template} is not valid YAML: {e}")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                problems.append(f"{template}: a document without apiVersion/kind: {doc!r:.80}")
                continue
            objects.append(doc)
            try:
                kv.validate(doc, KUBERNETES, strict=True)
            except kv.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(top)"
                problems.append(f"{template}: {describe(doc)}: {at}: {e.message}")
            except kv.SchemaNotFoundError as e:
                problems.append(f"{template}: {describe(doc)}: {e.message}")
    problems += api_checks(objects, no_nulls=our_chart)
    return len(objects), Counter(o["kind"] for o in objects), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chart", type=Path, default=REPO / "helm" / "rallypoint")
    parser.add_argument(
        "--nats-chart", type=Path, default=REPO.parent / "shared" / "vendor" / "nats-chart"
    )
    parser.add_argument("--examples", type=Path, default=REPO / "helm" / "examples")
    parser.add_argument("--out", type=Path, help="also write the rendered manifests here")
    args = parser.parse_args()

    if KUBERNETES not in kv.all_versions():
        print(f"helm check: kubernetes-validate has no Kubernetes {KUBERNETES} schemas "
              f"(it has {', '.join(sorted(set(kv.all_versions())))}); install an older "
              "kubernetes-validate", file=sys.stderr)
        return 2
    for what, path in (("our chart", args.chart), ("the NATS chart", args.nats_chart)):
        if not (path / "Chart.yaml").is_file():
            print(f"helm check: {what} is not at {path} (the NATS chart is expected in "
                  "shared/vendor/nats-chart beside the repository)", file=sys.stderr)
            return 2
    examples = sorted(args.examples.glob("*.yaml"))
    nats = [e for e in examples if e.name.startswith("nats-")]
    regions = [e for e in examples if not e.name.startswith("nats-")]
    if not nats or not regions:
        print(f"helm check: {args.examples} needs region examples and nats-*.yaml examples",
              file=sys.stderr)
        return 2

    print(f"helm check: Helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"Kubernetes {KUBERNETES} schemas (strict)")
    failures = 0
    runs = [(e.name, e, args.chart, True) for e in regions]
    runs += [("required values only", None, args.chart, True)]
    runs += [(e.name, e, args.nats_chart, False) for e in nats]
    for name, example, chart_dir, ours in runs:
        release = RELEASES["rallypoint" if ours else "nats"]
        try:
            values = MINIMAL if example is None else \
                yaml.load(example.read_text(), Loader=UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            failures += 1
            print(f"FAIL {name}: not valid YAML: {e}")
            continue
        stem = "minimal" if example is None else example.stem
        count, kinds, problems = check(chart_dir, stem, values, release, ours, args.out)
        label = f"{name} on {chart_dir.name} (release {release})"
        if problems:
            failures += len(problems)
            print(f"FAIL {label}:")
            for problem in problems:
                print(f"  - {problem}")
        else:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            print(f"ok   {label}: {count} manifests ({summary})")
    if failures:
        print(f"helm check FAILED: {failures} problem(s) above. Render one example with "
              f"`python3 helm/tools/render.py --out /tmp/rendered` to read the manifests.")
        return 1
    print(f"helm check: {len(runs)} values documents rendered, linted and valid for "
          f"Kubernetes {KUBERNETES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
