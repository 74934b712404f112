"""Literal references inside a resource: find them, and rewrite those that point at Bundle entries.

Both work on the resource's compact JSON, with string operations done in C: serialising, splitting and parsing
again is several times faster than walking a resource object by object in Python, and this runs on the event loop
for every write. In compact JSON every quote inside a string is escaped, so ``"reference":"`` can only be an
object's ``reference`` key holding a string, never text inside a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from gateway import encoding

_MARK = '"reference":"'


def _end(segment: str) -> int:
    """Return the index of the quote closing the JSON string that ``segment`` starts inside."""
    end = segment.find('"')
    while end > 0 and segment[end - 1] == "\\":
        slashes = len(segment[:end]) - len(segment[:end].rstrip("\\"))
        if slashes % 2 == 0:
            break
        end = segment.find('"', end + 1)
    return end


def _unescaped(raw: str) -> str:
    value: str = json.loads(f'"{raw}"') if "\\" in raw else raw
    return value


def _values(parts: list[str]) -> Iterator[tuple[int, int, str]]:
    for i in range(1, len(parts)):
        end = _end(parts[i])
        yield i, end, _unescaped(parts[i][:end])


def reference_targets(node: Any) -> set[str]:
    """Return every ``reference`` string in a resource (an object's ``reference`` key holding a string)."""
    return {value for _, _, value in _values(encoding.dumps(node).decode().split(_MARK))}


def rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """Return ``node`` with each ``reference`` found in ``mapping`` replaced by its target: a copy when one is,
    ``node`` itself when none is."""
    if not mapping:
        return node
    parts = encoding.dumps(node).decode().split(_MARK)
    rewritten = False
    for i, end, value in _values(parts):
        target = mapping.get(value)
        if target is not None:
            parts[i] = encoding.dumps(target)[1:-1].decode() + parts[i][end:]
            rewritten = True
    return encoding.loads(_MARK.join(parts).encode()) if rewritten else node
