"""Walk parsed FHIR JSON with the R4 tables: every object with its type key and path (for the invariant and mutation
tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from conformance.definitions import COMPLEX, PRIMITIVE, RESOURCE, TypeDef, tables


def typed_objects(resource: object, path: str | None = None) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Yield (type key, JSON object, path) for a resource and every object below it that the tables type."""
    if type(resource) is not dict or resource.get("resourceType") not in tables().resource_types:
        return
    resource_type = resource["resourceType"]
    yield from _objects(resource, tables().types[resource_type], path or resource_type)


def _objects(node: dict[str, Any], spec: TypeDef, path: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    yield spec.name, node, path
    for key, value in node.items():
        element = spec.elements.get(key)
        if element is None or element.kind == PRIMITIVE:
            continue
        items = list(enumerate(value)) if type(value) is list else [(None, value)]
        for index, item in items:
            here = f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"
            if type(item) is not dict:
                continue
            if element.kind == COMPLEX and element.spec is not None:
                yield from _objects(item, element.spec, here)
            elif element.kind == RESOURCE:
                yield from typed_objects(item, here)
