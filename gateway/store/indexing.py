"""What a stored resource is findable by (its search parameters' values, its canonical URL), and the conditions
of conditional interactions that these indexes answer.

``index_entries`` is computed once per version written; the store keeps the list beside the version (the ``idx``
field of ``cur``) so that the next version removes exactly what this one added.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from gateway.store.keys import Keyspace, escape
from gateway.store.parameters import (
    date_range,
    dates,
    indexed,
    indexed_values,
    normalized,
    references,
    relative_reference,
    strings,
    tokens,
)

__all__ = [
    "IndexEntry",
    "canonical_urls",
    "date_range",
    "index_entries",
    "parse_condition",
    "relative_reference",
    "split_escaped",
    "unescape",
]

# [kind, key, member]: "s" a set holding the id; "z" a scored zset holding the id, member its score; "l" a lexical
# zset, member the entry itself ("{text}\0{id}").
IndexEntry = tuple[str, str, str]


def canonical_urls(resource: Mapping[str, Any]) -> list[str]:
    """Return the canonical URL of a definitional resource, alone and with its version."""
    url, version = resource.get("url"), resource.get("version")
    if not isinstance(url, str) or not url:
        return []
    return [url, f"{url}|{version}"] if isinstance(version, str) and version else [url]


def index_entries(keys: Keyspace, tenant: str, stored: Mapping[str, Any]) -> list[IndexEntry]:
    """Return every index entry of a stored resource (not the ``ids`` and ``lu`` zsets, which hold every one)."""
    rtype, rid = str(stored.get("resourceType")), str(stored.get("id"))
    url_prefix, by_name = _index_keys(keys, tenant, rtype)
    found: set[IndexEntry] = set()
    for url in canonical_urls(stored):
        found.add(("s", url_prefix + url, ""))
    for name, values in indexed_values(stored, rtype).items():
        if not values:
            continue
        kind, key, other = by_name[name]
        if kind == "reference":
            found.update([("s", key + escape(t), "") for t in references(values)])
        elif kind == "token":  # the keys of Keyspace.token_index: "{s}|{c}", "*|{c}" and "{s}|*"
            for system, code in tokens(values):
                c = escape(code)
                found.add(("s", f"{key}{escape(system) if system else ''}|{c}", ""))
                found.add(("s", f"{key}*|{c}", ""))
                if system:
                    found.add(("s", f"{key}{escape(system)}|*", ""))
        elif kind == "date":
            span = dates(values)
            if span is not None:
                found.add(("z", key, repr(span[0])))
                found.add(("z", other, repr(span[1])))
        elif kind == "string":
            for text in strings(values):
                found.add(("l", key, f"{normalized(text)}\0{rid}"))
                found.add(("l", other, f"{text}\0{rid}"))
    return sorted(found)


@lru_cache(maxsize=4096)
def _index_keys(keys: Keyspace, tenant: str, rtype: str) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """Return the key prefix of a type's canonical URLs, and by parameter name its search type and the keys (or key
    prefixes) its entries go in: built once, not for every entry of every version written."""
    by_name: dict[str, tuple[str, str, str]] = {}
    for name, param in indexed(rtype).items():
        if param.type == "reference":
            by_name[name] = (param.type, keys.reference_prefix(tenant, rtype, name), "")
        elif param.type == "token":
            by_name[name] = (param.type, keys.token_prefix(tenant, rtype, name), "")
        elif param.type == "date":
            lo, hi = keys.date_index(tenant, rtype, name, "lo"), keys.date_index(tenant, rtype, name, "hi")
            by_name[name] = (param.type, lo, hi)
        elif param.type == "string":
            exact = keys.string_index(tenant, rtype, name, exact=True)
            by_name[name] = (param.type, keys.string_index(tenant, rtype, name), exact)
    return keys.url_prefix(tenant, rtype), by_name


def split_escaped(value: str, separator: str) -> list[str]:
    """Split a search value at each ``separator`` not escaped with a backslash (R4 escapes ``\\,``, ``\\|``,
    ``\\$`` and ``\\\\``); the parts keep their escapes (``unescape`` removes them)."""
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(part: str) -> str:
    """Remove search-value escapes: ``\\|`` is ``|``, ``\\\\`` is ``\\``."""
    out, escaped = [], False
    for char in part:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse_condition(criteria: str) -> tuple[str | None, str]:
    """Return (system, value) of a conditional-operation query; only one ``identifier`` is indexed for this.

    Accepts ``identifier=system|value``, ``identifier=value`` and the ``Type?identifier=...`` form; a ``|``
    inside a system or value is written ``\\|``. Raises ValueError saying what is not supported.
    """
    query = criteria.split("?", 1)[1] if "?" in criteria else criteria
    name, _, value = query.partition("=")
    if name != "identifier" or not value or "&" in value:
        raise ValueError("conditional operations support one identifier=[system|]value criterion")
    value = unquote(value)
    if len(split_escaped(value, ",")) != 1:
        raise ValueError("conditional operations support one identifier=[system|]value criterion")
    parts = [unescape(p) for p in split_escaped(value, "|")]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) != 2 or not parts[1]:
        raise ValueError("conditional operations need identifier=[system|]value with a value")
    return parts[0], parts[1]
