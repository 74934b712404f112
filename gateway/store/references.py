"""Literal references inside a resource: find them, and rewrite those that point at Bundle entries."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# A "reference" key with a string value, in compact JSON. Inside a JSON string every quote is escaped, so text
# that merely looks like a reference there cannot match.
_REFERENCE = re.compile(r'"reference":"((?:[^"\\]|\\.)*)"')


def reference_targets(node: Any) -> set[str]:
    """Return every ``reference`` string in a resource (an object's ``reference`` key holding a string).

    Serialising and scanning is done in C; walking a large resource object by object in Python is many times
    slower, and this runs on the event loop for every write.
    """
    text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    return {json.loads(f'"{raw}"') if "\\" in raw else raw for raw in _REFERENCE.findall(text)}


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
