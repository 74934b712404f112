"""values.yaml and values.schema.json: every key commented and camelCase, a strict schema at every level that agrees
with the values, and a values reference in docs/deploy.md that lists every value."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.rendering import CHART_DIR, REPO, render
from tests.helm.values_reference import VALUES, documented, lookup, read_values, table

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
DEFAULTS = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
# Keys the issue names, so that operators and tests can rely on them.
CONTRACT = [
    "redis.enabled",
    "redis.url",
    "ingress.enabled",
    "ingress.host",
    "ingress.tls.secretName",
    "autoscaling.enabled",
    "keda.enabled",
    "podDisruptionBudget.enabled",
    "metrics.serviceMonitor.enabled",
    "existingSecret",
]


def _objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "object" or "properties" in schema:
        yield path or "<root>", schema
    for key, sub in schema.get("properties", {}).items():
        yield from _objects(sub, f"{path}.{key}".lstrip("."))
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{path}[]")


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_every_value_is_commented() -> None:
    uncommented = [v.path for v in read_values() if not v.comment]
    assert uncommented == []


def test_every_key_is_camel_case() -> None:
    bad = [v.path for v in read_values() if not all(re.fullmatch(r"[a-z][a-zA-Z0-9]*", p) for p in v.path.split("."))]
    assert bad == []


def _value_paths(node: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key of the values, descending only into objects the schema gives fixed keys (not label maps)."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            yield from _value_paths(value, sub, path + ".")


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}"
        if "properties" in sub:
            yield from _schema_paths(sub, f"{prefix}{key}.")


def test_the_reader_sees_every_key_of_values_yaml() -> None:
    read = {v.path: v for v in read_values()}
    for path in _value_paths(DEFAULTS, SCHEMA):
        parent = path.rpartition(".")[0]
        if parent in read and not read[parent].section:
            continue  # a key of a flow-style object ({cpu: 250m, ...}), described by its parent's comment
        assert path in read, path
    assert set(read) <= set(_value_paths(DEFAULTS, SCHEMA))


def test_schema_is_strict_at_every_level() -> None:
    for path, obj in _objects(SCHEMA):
        if "properties" in obj:
            assert obj.get("additionalProperties") is False, f"{path} accepts unknown keys"
        else:
            # A map (labels, annotations, node selectors): any key, but only string values.
            assert obj.get("additionalProperties") == {"type": "string"}, f"{path} is an untyped object"


def test_schema_and_values_name_the_same_keys() -> None:
    values = set(_value_paths(DEFAULTS, SCHEMA))
    schema = set(_schema_paths(SCHEMA))
    # The schema may allow a key the defaults leave out: only ephemeral-storage in resources.
    assert {p.rsplit(".", 1)[-1] for p in schema - values} <= {"ephemeral-storage"}, sorted(schema - values)


def test_the_contract_keys_exist_with_their_defaults() -> None:
    for path in CONTRACT:
        lookup(DEFAULTS, path)
        assert _schema_at(path)
    assert DEFAULTS["redis"]["enabled"] is True
    assert DEFAULTS["podDisruptionBudget"]["enabled"] is True
    assert DEFAULTS["poller"]["enabled"] is False
    for off in ("ingress", "autoscaling", "keda"):
        assert DEFAULTS[off]["enabled"] is False
    assert DEFAULTS["metrics"]["serviceMonitor"]["enabled"] is False
    assert DEFAULTS["existingSecret"] == ""


@pytest.mark.parametrize(
    "values",
    [
        {"unknown": 1},
        {"redis": {"enabeld": False}},
        {"ingress": {"tls": {"secretname": "x"}}},
        {"api": {"resources": {"requests": {"gpu": 1}}}},
        {"networkPolicy": {"ehrEgress": [{"cidrs": ["10.0.0.0/8"], "ports": [443], "protocol": "UDP"}]}},
        {"config": {"maxBodyBytes": 10}},
        {"config": {"development": True}},
        {"config": {"keyPrefix": "gw prod"}},
        {"redis": {"appendfsync": "no"}},
        {"keda": {"metric": "cpu"}},
        {"api": {"replicas": "2"}},
    ],
)
def test_schema_refuses_wrong_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_docs_list_every_value() -> None:
    doc = documented()
    assert doc == table(), "docs/deploy.md is stale: run `python -m tests.helm.values_reference --write`"
    for value in read_values():
        assert f"`{value.path}`" in doc


def test_docs_cover_the_operations_topics() -> None:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8").lower()
    for topic in (
        "helm install",
        "helm upgrade",
        "appendfsync always",
        "everysec",
        "sentinel",
        "redis cluster",
        "gw:{tenant}",
        "managed redis",
        "gateway_wait_replicas",
        "sizing",
    ):
        assert topic in text, topic


def test_values_yaml_is_what_helm_loads() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        assert chart.values == DEFAULTS
        assert chart.metadata["name"] == Path(CHART_DIR).name
