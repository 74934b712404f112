"""Literal references inside a resource: find them, and rewrite those that point at Bundle entries.

Both work on the resource's compact JSON, with string operations done in C: serialising, splitting and parsing
again is several times faster than walking a resource object by object in Python, and this runs on the event loop
for every write. In compact JSON every quote inside a string is escaped, so ``"reference":"`` can only be an
object's ``reference`` key holding a string, never text inside a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

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


def _values(parts: list[str]) -> list[tuple[int, int, str]]:
    """Return, for each part after the first, its index, where its string ends and the string's value."""
    found = []
    for i in range(1, len(parts)):
        part = parts[i]
        end = part.find('"')
        if end > 0 and part[end - 1] == "\\":  # an escaped quote, perhaps: looked at closely
            end = _end(part)
        value = part[:end]
        found.append((i, end, _unescaped(value) if "\\" in value else value))
    return found


class Found:
    """A resource's references, found on its compact JSON once: read, and rewritten for as many mappings as asked
    (a create is digested with its references' ids, and again if one of them changes), without serialising and
    splitting the resource again each time."""

    def __init__(self, node: Any) -> None:
        self.node = node
        try:
            text, self._orjson = orjson.dumps(node), True
        except TypeError:  # an integer past 64 bits: ``encoding.dumps`` writes it with the standard library
            text, self._orjson = encoding.dumps(node), False
        self._parts = text.decode().split(_MARK)
        self._values = _values(self._parts)

    def targets(self) -> set[str]:
        """Return every ``reference`` string in the resource (an object's ``reference`` key holding a string)."""
        return {value for _, _, value in self._values}

    def rewritten(self, mapping: Mapping[str, str]) -> Any:
        """Return the resource with each ``reference`` found in ``mapping`` replaced by its target: a copy when one
        is, the resource itself when none is."""
        parts: list[str] | None = None
        for i, end, value in self._values:
            target = mapping.get(value)
            if target is not None:
                parts = parts or list(self._parts)
                parts[i] = encoding.dumps(target)[1:-1].decode() + self._parts[i][end:]
        if parts is None:
            return self.node
        raw = _MARK.join(parts).encode()
        if self._orjson:
            # orjson wrote every number here, so each is one it reads exactly: ``encoding.loads``'s look for an
            # integer past 64 bits (a scan of the whole text) would find none, and the standard library would read
            # the same values.
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
        return encoding.loads(raw)


def reference_targets(node: Any) -> set[str]:
    """Return every ``reference`` string in a resource (an object's ``reference`` key holding a string)."""
    return Found(node).targets()


def rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """Return ``node`` with each ``reference`` found in ``mapping`` replaced by its target: a copy when one is,
    ``node`` itself when none is."""
    return Found(node).rewritten(mapping) if mapping else node
