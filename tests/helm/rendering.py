"""Render the chart with Helm's own engine (``helm-python-sdk``, no helm binary) and read what comes out."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "fhir-gateway"
RELEASE = "gw"
NAMESPACE = "clinic"
GATEWAY_COMPONENTS = ("api", "worker", "poller")
# CRDs: kubernetes-validate ships schemas for built-in kinds only, so these two are checked by the tests' own
# assertions instead of a schema.
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Release:
    """One rendering of the chart: the manifests, each with the template it came from, and NOTES.txt."""

    text: str
    notes: str
    manifests: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def resources(self) -> set[tuple[str, str]]:
        """Return (kind, component label) of every manifest."""
        return {(m["kind"], component(m)) for m in self.manifests}

    def get(self, kind: str, component_name: str) -> dict[str, Any]:
        """Return the one manifest of a kind and component."""
        found = [m for m in self.manifests if m["kind"] == kind and component(m) == component_name]
        assert len(found) == 1, f"expected one {kind} for {component_name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (name, pod spec) of every workload's pod template."""
        for m in self.manifests:
            if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield m["metadata"]["name"], m["spec"]["template"]["spec"]

    def gateway_containers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (component, container) of every gateway (not Redis) container."""
        for m in self.manifests:
            if m["kind"] == "Deployment" and component(m) in GATEWAY_COMPONENTS:
                for container in m["spec"]["template"]["spec"]["containers"]:
                    yield component(m), container


def component(manifest: dict[str, Any]) -> str:
    """Return a manifest's app.kubernetes.io/component label."""
    return str(manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base with override merged in, recursively (what Helm does with -f)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _rendered(values_json: str) -> dict[str, str]:
    with helm.Chart.load(CHART_DIR) as chart:
        return chart.render(values=json.loads(values_json), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> Release:
    """Render the chart for release "gw" in namespace "clinic" with these values over the defaults."""
    out = dict(_rendered(json.dumps(values or {}, sort_keys=True)))
    notes = out.pop(f"{CHART_DIR.name}/templates/NOTES.txt", "")
    release = Release(text="\n---\n".join(out[k] for k in sorted(out)), notes=notes)
    for template, text in sorted(out.items()):
        docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d]
        release.templates[template.removeprefix(f"{CHART_DIR.name}/")] = docs
        release.manifests.extend(docs)
    return release


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run helm lint (strict: warnings count) against Kubernetes 1.30."""
    return helm.lint(CHART_DIR, values or {}, strict=True, kube_version="v1.30.0", namespace=NAMESPACE)


def default_values() -> dict[str, Any]:
    """Return the chart's values.yaml as loaded by Helm."""
    return copy.deepcopy(_default_values())


@functools.cache
def _default_values() -> dict[str, Any]:
    with helm.Chart.load(CHART_DIR) as chart:
        return chart.values


def kind_of_template(template: str) -> str:
    """Return the kind a template file is named for: api-hpa.yaml -> hpa."""
    return re.sub(r"^[a-z]+-", "", Path(template).stem)
