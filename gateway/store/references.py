"""Literal references inside a resource: find them, and rewrite those that point at Bundle entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def reference_targets(node: Any) -> set[str]:
    """Return every ``reference`` string in a resource."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("reference")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """Return a copy of ``node`` with each ``reference`` found in ``mapping`` replaced by its target."""
    if not mapping:
        return node
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in mapping:
                out[key] = mapping[value]
            else:
                out[key] = rewrite_references(value, mapping)
        return out
    if isinstance(node, list):
        return [rewrite_references(item, mapping) for item in node]
    return node
