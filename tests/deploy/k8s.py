"""Rendering the charts with real Helm and checking what comes out.

Helm runs in-process through helm-python-sdk (Helm v4's Go SDK as a shared library);
manifests are validated against the Kubernetes OpenAPI schemas of kubernetes-validate,
and the Prometheus Operator kinds against the small schemas in schemas/.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CUSTOMER_CHART = ROOT / "deploy" / "helm" / "mcp-tunnel"
SERVER_CHART = ROOT / "deploy" / "helm" / "mcp-tunnel-server"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The newest Kubernetes whose schemas kubernetes-validate ships.
KUBE_VERSION = kubernetes_validate.utils.latest_version()

DIGEST = "sha256:" + "5f" * 32

# Kinds of CustomResourceDefinitions the charts may render, validated locally.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
}


@functools.cache
def chart(path: Path) -> helm.Chart:
    """One loaded chart per path for the whole session (charts are immutable)."""
    return helm.Chart.load(str(path))


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: later dicts win; lists are replaced, not appended (as Helm does)."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def render_files(
    path: Path,
    values: dict[str, Any],
    *,
    release: str = "mcp-tunnel",
    namespace: str = "mcp-tunnel",
    upgrade: bool = False,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (or an upgrade) renders it."""
    return chart(path).render(
        values=values,
        name=release,
        namespace=namespace,
        is_install=not upgrade,
        is_upgrade=upgrade,
    )


def render(path: Path, values: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (NOTES.txt left out)."""
    docs: list[dict[str, Any]] = []
    for name, text in sorted(render_files(path, values, **kwargs).items()):
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def lint(path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm lint --strict` findings above "info" (warnings and errors)."""
    report = helm.lint(str(path), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    findings += [{"severity": 3, "path": "", "error": e} for e in report["errors"]]
    return findings


@functools.cache
def _crd_schema(filename: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / filename).read_text())


def validate(obj: dict[str, Any]) -> None:
    """Raise if obj does not match its kind's schema (unknown fields included)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        jsonschema.validate(obj, _crd_schema(CRD_SCHEMAS[key]))
    else:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{kind}/{name}", o["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"{kind}/{name}", o["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def hook(obj: dict[str, Any]) -> set[str]:
    value = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return {h for h in value.split(",") if h}


def config_of(objs: list[dict[str, Any]], name: str = "mcp-tunnel") -> dict[str, Any]:
    """The proxy's config.yaml from the rendered ConfigMap, parsed."""
    return yaml.safe_load(one(objs, "ConfigMap", name)["data"]["config.yaml"])
