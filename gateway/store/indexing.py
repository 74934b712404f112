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
    Walker,
    _compile,
    _flat,
    date_range,
    dates,
    indexed,
    normalized,
    relative_reference,
    strings,
)

__all__ = [
    "IndexEntry",
    "canonical_urls",
    "date_range",
    "index_entries",
    "pack_index",
    "parse_condition",
    "relative_reference",
    "split_escaped",
    "unescape",
    "unpack_index",
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
    url_prefix, walk, by_date = _index_walk(keys, tenant, rtype)
    found: set[IndexEntry] = set()
    add = found.add
    if "url" in stored:
        for url in canonical_urls(stored):
            add(("s", url_prefix + url, ""))
    if walk is not None:
        spans: dict[str, list[Any]] = {}  # a date parameter's values make one range: gathered, then read together
        walk(stored, (add, rid, spans))
        for name, values in spans.items():
            span = dates(values)
            if span is not None:
                lo, hi = by_date[name]
                add(("z", lo, repr(span[0])))
                add(("z", hi, repr(span[1])))
    return sorted(found)


def pack_index(root: str, entries: list[IndexEntry]) -> dict[str, Any] | list[IndexEntry]:
    """Return a version's index entries in the packed form (store format 2): ``{"p": root, "s": [set keys without
    the root], "o": [[kind, key without the root, member], ...]}``, where ``root`` is what all of a type's index keys
    start with (``Keyspace.index_root``) and a set's member is always the resource's id. About half the bytes of the
    lists, in Redis's memory and in every write's append-only file record (995 against 513 bytes for the benchmark's
    Appointment).

    Written only once an operator has set store format 2 (gateway/store/format.py): a process of a version before
    12d42f2 reads lists only, and would leave a packed resource in the index entries of its version before.
    """
    cut = len(root)
    sets: list[str] = []
    other: list[list[str]] = []
    for kind, key, member in entries:
        if not key.startswith(root):
            return entries  # no index key is outside its type's (Keyspace), but the lists hold any key
        if kind == "s":
            sets.append(key[cut:])
        else:
            other.append([kind, key[cut:], member])
    packed: dict[str, Any] = {"p": root, "s": sets}
    if other:
        packed["o"] = other
    return packed


def unpack_index(value: Any) -> list[IndexEntry]:
    """Return the index entries an ``idx`` field holds (parsed JSON): a list of ``[kind, key, member]`` (store
    format 1), of keys alone (sets, before entries had kinds), or the packed form (``pack_index``, format 2)."""
    if type(value) is dict:
        root = value["p"]
        found: list[IndexEntry] = [("s", root + key, "") for key in value["s"]]
        found += [(kind, root + key, member) for kind, key, member in value.get("o", ())]
        return found
    return [("s", raw, "") if isinstance(raw, str) else (str(raw[0]), str(raw[1]), str(raw[2])) for raw in value]


# What the walk passes its ends (``parameters.Walker``'s second argument): the entries' ``add``, the resource's id,
# and the values each date parameter reached, by name. Each end adds the entries of what its path reached, as
# ``references``, ``tokens`` and ``strings`` read values (a list walked through, None left out); the entries are a
# set, so a value reached twice adds nothing more.
_Out = tuple[Callable[[IndexEntry], None], str, dict[str, list[Any]]]


def _reference_end(key: str) -> Walker:
    def end(node: Any, out: _Out) -> None:
        if type(node) is list:
            for item in node:
                end(item, out)
        elif type(node) is dict or isinstance(node, Mapping):
            reference = node.get("reference")
            target = relative_reference(reference if type(reference) is str else None)
            if target:
                out[0](("s", key + escape(target), ""))
        elif isinstance(node, str) and node:
            add = out[0]
            add(("s", key + escape(node), ""))
            add(("s", key + escape(node.partition("|")[0]), ""))

    return end


def _token_end(key: str) -> Walker:
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

    def end(node: Any, out: _Out) -> None:
        if type(node) is list:
            for item in node:
                end(item, out)
        elif isinstance(node, bool):
            one(None, "true" if node else "false", out[0])
        elif isinstance(node, str):
            one(None, node, out[0])
        elif type(node) is dict or isinstance(node, Mapping):
            coding_list = node.get("coding")
            codings: list[Any] = coding_list if isinstance(coding_list, list) else [node]
            for coding in codings:
                if type(coding) is not dict and not isinstance(coding, Mapping):
                    continue
                code = coding.get("code", coding.get("value"))
                if isinstance(code, str) and code:
                    one(coding.get("system"), code, out[0])

    return end


def _date_end(name: str) -> Walker:
    def end(node: Any, out: _Out) -> None:
        _flat(node, out[2].setdefault(name, []))

    return end


def _string_end(key: str, exact: str) -> Walker:
    def end(node: Any, out: _Out) -> None:
        if type(node) is list:
            for item in node:
                end(item, out)
        elif node is not None:
            add, rid, _ = out
            for text in strings([node]):
                add(("l", key, f"{normalized(text)}\0{rid}"))
                add(("l", exact, f"{text}\0{rid}"))

    return end


@lru_cache(maxsize=4096)
def _index_walk(keys: Keyspace, tenant: str, rtype: str) -> tuple[str, Walker | None, dict[str, tuple[str, str]]]:
    """Return the key prefix of a type's canonical URLs, one walk of a resource that adds the entries of all its
    type's parameters (each path ending in what its search type makes of the values, with its keys or key prefixes),
    and the two keys of each date parameter: built once, not for every entry of every version written."""
    ends: list[tuple[tuple[Any, ...], Walker]] = []
    by_date: dict[str, tuple[str, str]] = {}
    for name, param in indexed(rtype).items():
        if param.type == "reference":
            end = _reference_end(keys.reference_prefix(tenant, rtype, name))
        elif param.type == "token":
            end = _token_end(keys.token_prefix(tenant, rtype, name))
        elif param.type == "date":
            by_date[name] = keys.date_index(tenant, rtype, name, "lo"), keys.date_index(tenant, rtype, name, "hi")
            end = _date_end(name)
        elif param.type == "string":
            exact = keys.string_index(tenant, rtype, name, exact=True)
            end = _string_end(keys.string_index(tenant, rtype, name), exact)
        else:
            continue  # uri: no index holds them
        ends += [(path, end) for path in param.paths]
    return keys.url_prefix(tenant, rtype), _compile(ends) if ends else None, by_date


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
