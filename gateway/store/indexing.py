"""What a stored resource is findable by (its search parameters' values, its canonical URL), and the conditions
of conditional interactions that these indexes answer.

``compact_entries`` is computed once per version written; the store keeps the list beside the version (the ``idx``
field of ``cur``, ``encode_index``) so that the next version removes exactly what this one added (``decode_index``
reads it, in this compact form or the one earlier gateways wrote). An entry's key is relative to the type's index
prefix, so the list holds neither tenant nor key prefix; ``index_entries`` gives the same entries with full keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast
from urllib.parse import unquote

import orjson

from gateway import encoding
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
    "compact_entries",
    "date_range",
    "decode_index",
    "encode_index",
    "expand_index",
    "index_entries",
    "parse_condition",
    "relative_reference",
    "split_escaped",
    "unescape",
]

# [kind, key, member]: "s" a set holding the id; "z" a scored zset holding the id, member its score; "l" a lexical
# zset, member the entry itself ("{text}\0{id}").
IndexEntry = tuple[str, str, str]

# Stored, an entry is one string, its key relative to the type's index prefix (``Keyspace.index_prefix``): an "s"
# entry is that key ("ref:patient:Patient/1": set keys start with "tok:", "ref:" or "url:"); a "z" or "l" entry is
# its kind letter, the key, a space and the member ("zdate:date:lo 1796997600000.0", "lstr:name riv\0p1"). Their
# keys end in a parameter name, which has no space, so the first space ends the key; an "s" entry's key may hold
# anything. A set entry is then written with one concatenation, the cheapest for the many set entries.
_MARK = ""  # the first item of the stored list: the compact form (the old form's first item is a list or a key)
_FOREIGN = "!"  # an old form's entry that the compact form cannot hold (a key outside the prefix): "!" + its JSON


def canonical_urls(resource: Mapping[str, Any]) -> list[str]:
    """Return the canonical URL of a definitional resource, alone and with its version."""
    url, version = resource.get("url"), resource.get("version")
    if not isinstance(url, str) or not url:
        return []
    return [url, f"{url}|{version}"] if isinstance(version, str) and version else [url]


def index_entries(keys: Keyspace, tenant: str, stored: Mapping[str, Any]) -> list[IndexEntry]:
    """Return every index entry of a stored resource (not the ``ids`` and ``lu`` zsets, which hold every one), with
    full keys: ``compact_entries`` expanded (the store keeps and moves the compact ones)."""
    return expand_index(keys.index_prefix(tenant, str(stored.get("resourceType"))), compact_entries(stored))


def compact_entries(stored: Mapping[str, Any]) -> list[str]:
    """Return every index entry of a stored resource in its compact form (relative keys, one string each),
    sorted and once each: the same entries as ``index_entries``, whatever the tenant and key prefix."""
    rtype, rid = str(stored.get("resourceType")), str(stored.get("id"))
    by_name = _index_keys(rtype)
    found = {"url:" + url for url in canonical_urls(stored)}
    for name, values in indexed_values(stored, rtype).items():
        if not values:
            continue
        kind, key, other = by_name[name]
        if kind == "reference":
            found.update([key + escape(t) for t in references(values)])
        elif kind == "token":  # the keys of Keyspace.token_index: "{s}|{c}", "*|{c}" and "{s}|*"
            for system, code in tokens(values):
                c = escape(code)
                found.add(f"{key}{escape(system) if system else ''}|{c}")
                found.add(f"{key}*|{c}")
                if system:
                    found.add(f"{key}{escape(system)}|*")
        elif kind == "date":
            span = dates(values)
            if span is not None:
                found.add(key + repr(span[0]))
                found.add(other + repr(span[1]))
        elif kind == "string":
            for text in strings(values):
                found.add(f"{key}{normalized(text)}\0{rid}")
                found.add(f"{other}{text}\0{rid}")
    return sorted(found)


_RELATIVE = Keyspace("")  # builds keys whose type prefix is cut off below (the same builders as every key's)


@lru_cache(maxsize=1024)
def _index_keys(rtype: str) -> dict[str, tuple[str, str, str]]:
    """Return by parameter name its search type and the starts of its compact entries (the relative key or key
    prefix; for "z" and "l" after the kind letter and before the space and the member): built once per type."""
    cut = len(_RELATIVE.index_prefix("", rtype))
    by_name: dict[str, tuple[str, str, str]] = {}
    for name, param in indexed(rtype).items():
        if param.type == "reference":
            by_name[name] = (param.type, _RELATIVE.reference_prefix("", rtype, name)[cut:], "")
        elif param.type == "token":
            by_name[name] = (param.type, _RELATIVE.token_prefix("", rtype, name)[cut:], "")
        elif param.type == "date":
            lo, hi = (_RELATIVE.date_index("", rtype, name, end)[cut:] for end in ("lo", "hi"))
            by_name[name] = (param.type, f"z{lo} ", f"z{hi} ")
        elif param.type == "string":
            plain, exact = (_RELATIVE.string_index("", rtype, name, exact)[cut:] for exact in (False, True))
            by_name[name] = (param.type, f"l{plain} ", f"l{exact} ")
    return by_name


def encode_index(entries: list[str], prefix: str, *, compact: bool) -> bytes:
    """Return the ``idx`` field of ``cur`` for compact entries (``prefix`` is the type's index prefix).

    ``compact``: a JSON list, the mark then the entries (none: []). Otherwise the form every gateway reads, earlier
    ones included: a JSON list of [kind, full key, member]. A gateway from before the compact form would take a
    compact entry for a set key and leave the previous version's index entries behind, so the compact form is
    written only when ``GATEWAY_COMPACT_INDEX_LISTS`` says that no such gateway shares the Redis any more.
    """
    if not entries:
        return b"[]"
    return encoding.dumps([_MARK, *entries]) if compact else encoding.dumps(expand_index(prefix, entries))


def decode_index(raw: bytes | str | None, prefix: str) -> list[str]:
    """Return the compact entries of an ``idx`` field, written in the compact form or in the old one (a JSON list of
    [kind, full key, member], or before kinds of full keys of sets); ``prefix`` is the type's index prefix."""
    if not raw:
        return []
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        items = json.loads(raw)
    if not items:
        return []
    if items[0] == _MARK:
        del items[0]
        return cast(list[str], items)
    return [_compacted(prefix, item) for item in items]


def _compacted(prefix: str, item: Any) -> str:
    """Return an old form's entry in the compact form."""
    kind, key, member = ("s", item, "") if isinstance(item, str) else (str(item[0]), str(item[1]), str(item[2]))
    relative = key[len(prefix) :]
    if kind == "s" and key.startswith(prefix) and relative[:1] not in ("", "z", "l", _FOREIGN):
        return relative
    if kind in ("z", "l") and key.startswith(prefix) and " " not in relative:
        return f"{kind}{relative} {member}"
    return _FOREIGN + json.dumps([kind, key, member], ensure_ascii=False)  # kept as it was, to be removed


def expand_index(prefix: str, entries: list[str]) -> list[IndexEntry]:
    """Return compact entries as [kind, full key, member] (the old form's entries), sorted."""
    return sorted(_expanded(prefix, entry) for entry in entries)


def _expanded(prefix: str, entry: str) -> IndexEntry:
    """Return a compact entry as [kind, full key, member]."""
    kind = entry[0]
    if kind == "z" or kind == "l":
        key, _, member = entry[1:].partition(" ")
        return kind, prefix + key, member
    if kind == _FOREIGN:
        found = json.loads(entry[1:])
        return str(found[0]), str(found[1]), str(found[2])
    return "s", prefix + entry, ""


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
