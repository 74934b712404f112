"""What a stored resource is findable by (its search parameters' values, its canonical URL), and the conditions
of conditional interactions that these indexes answer.

``index_entries`` is computed once per version written; the store keeps the list beside the version (the ``idx``
field of ``cur``) so that the next version removes exactly what this one added.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    relative_reference,
    strings,
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
    add = found.add
    if "url" in stored:
        for url in canonical_urls(stored):
            add(("s", url_prefix + url, ""))
    for name, values in indexed_values(stored, rtype).items():
        if values:
            by_name[name](values, add, rid)
    return sorted(found)


# What one parameter's values add to a resource's entries: (its values, the entries' ``add``, the resource's id).
_Emit = Callable[[list[Any], Callable[[IndexEntry], None], str], None]


def _reference_entries(key: str) -> _Emit:
    def emit(values: list[Any], add: Callable[[IndexEntry], None], rid: str) -> None:
        # ``references``, its targets added as they are found (the entries are a set: each once all the same).
        for value in values:
            if type(value) is dict or isinstance(value, Mapping):
                reference = value.get("reference")
                target = relative_reference(reference if type(reference) is str else None)
                if target:
                    add(("s", key + escape(target), ""))
            elif isinstance(value, str) and value:
                add(("s", key + escape(value), ""))
                add(("s", key + escape(value.partition("|")[0]), ""))

    return emit


def _token_entries(key: str) -> _Emit:
    # The keys of Keyspace.token_index: "{s}|{c}", "*|{c}" and "{s}|*".
    def one(system: Any, code: str, add: Callable[[IndexEntry], None]) -> None:
        c = escape(code)
        if isinstance(system, str) and system:
            s = escape(system)
            add(("s", f"{key}{s}|{c}", ""))
            add(("s", f"{key}{s}|*", ""))
        else:
            add(("s", f"{key}|{c}", ""))
        add(("s", f"{key}*|{c}", ""))

    def emit(values: list[Any], add: Callable[[IndexEntry], None], rid: str) -> None:
        # ``tokens``, each (system, code) turned into its entries as it is found.
        for value in values:
            if isinstance(value, bool):
                one(None, "true" if value else "false", add)
            elif isinstance(value, str):
                one(None, value, add)
            elif type(value) is dict or isinstance(value, Mapping):
                coding_list = value.get("coding")
                codings: list[Any] = coding_list if isinstance(coding_list, list) else [value]
                for coding in codings:
                    if type(coding) is not dict and not isinstance(coding, Mapping):
                        continue
                    code = coding.get("code", coding.get("value"))
                    if isinstance(code, str) and code:
                        one(coding.get("system"), code, add)

    return emit


def _date_entries(lo: str, hi: str) -> _Emit:
    def emit(values: list[Any], add: Callable[[IndexEntry], None], rid: str) -> None:
        span = dates(values)
        if span is not None:
            add(("z", lo, repr(span[0])))
            add(("z", hi, repr(span[1])))

    return emit


def _string_entries(key: str, exact: str) -> _Emit:
    def emit(values: list[Any], add: Callable[[IndexEntry], None], rid: str) -> None:
        for text in strings(values):
            add(("l", key, f"{normalized(text)}\0{rid}"))
            add(("l", exact, f"{text}\0{rid}"))

    return emit


def _no_entries(values: list[Any], add: Callable[[IndexEntry], None], rid: str) -> None:
    """A uri parameter's (the walk reaches none: no index holds them)."""


@lru_cache(maxsize=4096)
def _index_keys(keys: Keyspace, tenant: str, rtype: str) -> tuple[str, dict[str, _Emit]]:
    """Return the key prefix of a type's canonical URLs, and by parameter name what its values add to the entries,
    with the keys (or key prefixes) they go in: built once, not for every entry of every version written."""
    by_name: dict[str, _Emit] = {}
    for name, param in indexed(rtype).items():
        if param.type == "reference":
            by_name[name] = _reference_entries(keys.reference_prefix(tenant, rtype, name))
        elif param.type == "token":
            by_name[name] = _token_entries(keys.token_prefix(tenant, rtype, name))
        elif param.type == "date":
            lo, hi = keys.date_index(tenant, rtype, name, "lo"), keys.date_index(tenant, rtype, name, "hi")
            by_name[name] = _date_entries(lo, hi)
        elif param.type == "string":
            exact = keys.string_index(tenant, rtype, name, exact=True)
            by_name[name] = _string_entries(keys.string_index(tenant, rtype, name), exact)
        else:
            by_name[name] = _no_entries
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
