"""FHIR search parameters: what each one asks for, and what the gateway does with one it does not serve.

A search never widens. Every parameter is one of:

- served: ``_id``, ``_lastUpdated``, and the R4 parameters the store indexes for the type (``gateway.store.
  parameters``: every reference parameter, and ``identifier``, ``status``, ``code``, ``category``, ``gender``,
  ``date``, ``birthdate``, ``name``, ``family``, ``given``, ``url`` where R4 defines them), with the modifiers
  listed in ``MODIFIERS``; repeated parameters are ANDed, comma-separated values ORed;
- refused with 400, always: one that would narrow by a patient, a subject or another reference (an R4 reference
  parameter the gateway cannot evaluate, ``patient`` or ``subject`` where R4 has no such parameter, a chained
  parameter, ``_has``, a ``:Type`` modifier on an unknown parameter), a text or query search (``_text``,
  ``_content``, ``_list``, ``_filter``, ``_query``), an unsupported modifier or prefix of a served parameter, and a
  bad value of a served one;
- ignored otherwise (any other parameter R4 defines, or one it does not): it is left out of the ``self`` link, as
  R4 allows, unless the client sends ``Prefer: handling=strict``, which makes it a 400 too.

The result controls: ``_count``, ``_sort`` (``_id``, ``_lastUpdated`` or a date parameter, ``-`` for descending),
``_summary=count`` / ``false``, ``_total``, ``_elements``, ``_include`` / ``_revinclude`` (``Type:param`` or
``Type:param:Target`` for a served reference parameter), and ``_cursor`` (the next page, from a ``next`` link).
Diagnostics name the parameter, never its value.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue
from gateway.errors import BadRequest
from gateway.store.indexing import date_range, split_escaped, unescape
from gateway.store.parameters import Parameter, indexed, known, normalized, relative_reference

# Parameters every type has in R4 that the gateway does not serve: ignored unless strict, except those it refuses.
COMMON = ("_tag", "_profile", "_security", "_source", "_type")
REFUSED = ("_has", "_text", "_content", "_list", "_filter", "_query")
CONTROL = ("_count", "_cursor", "_format", "_pretty", "_summary", "_total", "_sort", "_elements", "_include",
           "_revinclude")  # fmt: skip
MODIFIERS = {"string": ("exact",), "reference": ("<Type>",), "token": (), "date": (), "uri": ()}
DATE_PREFIXES = ("eq", "gt", "lt", "ge", "le", "sa", "eb")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@dataclass
class Criterion:
    """One parameter occurrence: its values are ORed."""

    kind: str  # id, lastUpdated, reference, token, date, string, exact, url
    param: str  # the base name ("subject")
    values: list[Any]  # per kind: ids; refs "Type/id"; (system|None, code|None); (prefix, low, high); text


@dataclass(frozen=True)
class Include:
    """``_include`` / ``_revinclude``: the source type, its reference parameter, and the target type if given."""

    source: str
    param: str
    target: str | None


@dataclass
class Query:
    """A parsed search."""

    rtype: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    sort: str = "_id"  # _id, _lastUpdated or a date parameter
    descending: bool = False
    cursor: dict[str, Any] | None = None
    summary_count: bool = False
    total: bool = True
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # what the self link repeats


@cache
def _known_names() -> frozenset[str]:
    return frozenset(n for t in R4_RESOURCE_TYPES for n in known(t)) | {
        *COMMON,
        *REFUSED,
        *CONTROL,
        "_id",
        "_lastUpdated",
    }


def _label(name: str) -> str | None:
    """Return how a diagnostic may name a parameter the client sent: a parameter R4 defines, with its modifier
    when that is one R4 defines; never text of the client's own (it may be data typed into the wrong place)."""
    base, colon, modifier = name.partition(":")
    if base not in _known_names():
        return None
    if (
        colon
        and modifier not in R4_RESOURCE_TYPES
        and modifier
        not in (
            "exact",
            "contains",
            "missing",
            "not",
            "text",
            "above",
            "below",
            "in",
            "not-in",
            "of-type",
            "identifier",
            "iterate",
        )
    ):
        return base
    return name


def _said(name: str) -> str:
    """Return the parameter as a diagnostic may say it (``_label``), or "a parameter"."""
    return _label(name) or "a parameter"


def _not_supported(why: str, *, expression: str | None) -> BadRequest:
    """Return the 400 for a parameter, modifier or prefix the gateway does not serve (issue code not-supported)."""
    return BadRequest(why, issues=[Issue("error", "not-supported", expression, why)])


def _unsupported(name: str, why: str, strict: bool) -> None:
    if strict:
        raise _not_supported(f"{why} (Prefer: handling=strict)", expression=_label(name))


def _values(raw: str) -> list[str]:
    return [v for v in split_escaped(raw, ",") if v != ""]


# The comparison signs of FHIR DSTU1, which some clients (fhirclient's ``$gt`` search structs) still send.
_SIGNS = {">=": "ge", "<=": "le", ">": "gt", "<": "lt"}


def _date(name: str, raw: str) -> tuple[str, float, float]:
    sign = next((s for s in _SIGNS if raw.startswith(s)), None)
    if sign is not None:
        raw = _SIGNS[sign] + raw[len(sign) :]
    prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
    if prefix not in DATE_PREFIXES:
        raise _not_supported(
            f"the date prefix of {_said(name)} is not supported (eq gt lt ge le sa eb are)", expression=_label(name)
        )
    span = date_range(text)
    if span is None:
        raise BadRequest(f"the value of {_said(name)} is not a FHIR date", expression=_label(name))
    return prefix, span[0], span[1]


def _reference(name: str, param: Parameter, modifier: str | None, raw: str) -> list[str]:
    targets: list[str] = []
    for value in _values(raw):
        text = unescape(value)
        rel = relative_reference(text)
        if rel is not None:
            if modifier and not rel.startswith(f"{modifier}/"):
                raise BadRequest(f"{_said(name)} names another type than its modifier", expression=_label(name))
            targets.append(rel)
            if "://" in text:
                targets.append(text)  # it may be a canonical URL, indexed as written
        elif "/" not in text and ":" not in text:  # a bare id: of the modifier's type, or of any target type
            kinds = [modifier] if modifier else sorted(param.targets or R4_RESOURCE_TYPES)
            targets += [f"{kind}/{text}" for kind in kinds]
        elif "://" in text or text.startswith("urn:"):
            targets.append(text)  # a canonical reference
        else:
            raise BadRequest(f"the value of {_said(name)} is not a reference", expression=_label(name))
    return targets


def _token(raw: str) -> list[tuple[str | None, str | None]]:
    found: list[tuple[str | None, str | None]] = []
    for value in _values(raw):
        parts = [unescape(p) for p in split_escaped(value, "|")]
        if len(parts) == 1:
            found.append((None, parts[0]))
        else:
            system, code = parts[0], "|".join(parts[1:])
            found.append((system, code or None))
    return found


def _served(q: Query, name: str, base: str, modifier: str | None, raw: str, param: Parameter) -> None:
    if param.type == "reference":
        if modifier is not None and modifier not in R4_RESOURCE_TYPES:
            raise _not_supported(
                f"the modifier of {_said(name)} is not supported (a resource type is)", expression=_label(name)
            )
        q.criteria.append(Criterion("reference", base, _reference(name, param, modifier, raw)))
    elif modifier is not None and modifier not in MODIFIERS[param.type]:
        raise _not_supported(f"the modifier of {_said(name)} is not supported", expression=_label(name))
    elif param.type == "token":
        q.criteria.append(Criterion("token", base, _token(raw)))
    elif param.type == "date":
        q.criteria.append(Criterion("date", base, [_date(name, v) for v in _values(raw)]))
    elif param.type == "string":
        kind = "exact" if modifier == "exact" else "string"
        texts = [unescape(v) for v in _values(raw)]
        q.criteria.append(Criterion(kind, base, texts if kind == "exact" else [normalized(t) for t in texts]))
    else:
        q.criteria.append(Criterion("url", base, [unescape(v) for v in _values(raw)]))
    q.echo.append((name, raw))


def _include(q: Query, name: str, raw: str, reverse: bool, strict: bool) -> None:
    parts = raw.split(":")
    if name not in ("_include", "_revinclude") or len(parts) not in (2, 3) or parts[1] == "*":
        _unsupported(name, f"this form of {_said(name)} is not supported", strict)
        return
    source, param, target = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    spec = indexed(source).get(param)
    if (reverse and spec is None) or (not reverse and source != q.rtype):
        raise BadRequest(
            f"{_said(name)} names a type or parameter that does not fit this search", expression=_label(name)
        )
    if spec is None or spec.type != "reference" or (target is not None and target not in R4_RESOURCE_TYPES):
        raise BadRequest(f"{_said(name)} must name a reference parameter the gateway serves", expression=_label(name))
    (q.revincludes if reverse else q.includes).append(Include(source, param, target))
    q.echo.append((name, raw))


def _control(q: Query, name: str, raw: str, strict: bool, max_count: int) -> None:
    if name == "_count":
        if not raw.isdigit():
            raise BadRequest("_count must be a non-negative integer", expression="_count")
        q.count = min(int(raw), max_count)
    elif name == "_cursor":
        q.cursor = decode_cursor(raw)
    elif name == "_summary":
        if raw in ("count", "false"):
            q.summary_count = raw == "count"
            q.echo.append((name, raw))
        else:
            _unsupported(name, "_summary supports count and false", strict)
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise BadRequest("_total must be none, estimate or accurate", expression=_label(name))
        q.total = raw != "none"
        q.echo.append((name, raw))
    elif name == "_sort":
        keys = raw.split(",")
        key = keys[0].removeprefix("-")
        dated = indexed(q.rtype).get(key)
        if len(keys) > 1 or not (key in ("_id", "_lastUpdated") or (dated is not None and dated.type == "date")):
            _unsupported(name, "_sort supports one of _id, _lastUpdated or a date parameter", strict)
            return
        q.sort, q.descending = key, keys[0].startswith("-")
        q.echo.append((name, raw))
    elif name == "_elements":
        q.elements = [e.strip() for e in raw.split(",") if e.strip()]
        q.echo.append((name, raw))
    elif name in ("_include", "_revinclude") or name.startswith(("_include:", "_revinclude:")):
        _include(q, name, raw, name.startswith("_revinclude"), strict)


def parse_query(
    rtype: str, params: list[tuple[str, str]], default_count: int, max_count: int, *, strict: bool = False
) -> Query:
    """Parse search parameters (see the module docstring), or raise BadRequest naming the one refused."""
    q = Query(rtype=rtype, count=default_count)
    served = indexed(rtype)
    defined = known(rtype)
    for name, raw in params:
        base, _, modifier_text = name.partition(":")
        modifier = modifier_text or None
        if name in ("_format", "_pretty"):
            continue
        if base in CONTROL or base in ("_include", "_revinclude"):
            _control(q, name, raw, strict, max_count)
        elif "." in base:
            raise _not_supported("chained search parameters are not supported", expression=_label(name))
        elif base == "_id":
            if modifier:
                raise _not_supported("_id takes no modifier", expression=_label(name))
            q.criteria.append(Criterion("id", "_id", [unescape(v) for v in _values(raw)]))
            q.echo.append((name, raw))
        elif base == "_lastUpdated":
            if modifier:
                raise _not_supported("_lastUpdated takes no modifier", expression=_label(name))
            q.criteria.append(Criterion("lastUpdated", base, [_date(name, v) for v in _values(raw)]))
            q.echo.append((name, raw))
        elif base in served:
            _served(q, name, base, modifier, raw, served[base])
        elif base in REFUSED or defined.get(base) == "reference" or base in ("patient", "subject"):
            why = f"search parameter {_said(base)} is not supported, and ignoring it would widen the result"
            raise _not_supported(why, expression=_label(name))
        elif modifier is not None and modifier in R4_RESOURCE_TYPES:
            raise _not_supported(
                f"search parameter {_said(base)} is not supported for {rtype}", expression=_label(name)
            )
        elif base in defined or base in COMMON:
            _unsupported(name, f"search parameter {_said(base)} is not supported for {rtype}", strict)
        else:
            _unsupported(name, f"a parameter that is not a search parameter of {rtype} was sent", strict)
    return q


def subset(resource: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    """Return ``resource`` with only ``elements`` (and what every resource keeps), tagged SUBSETTED."""
    kept = {k: v for k, v in resource.items() if k in ("resourceType", "id", "meta") or k in elements}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    kept["meta"] = meta
    return kept


def encode_cursor(cursor: dict[str, Any]) -> str:
    """Return an opaque paging cursor."""
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(value: str) -> dict[str, Any]:
    """Return a cursor ``encode_cursor`` made, or raise BadRequest."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("_cursor is not one this gateway issued", expression="_cursor") from None
    if not isinstance(decoded, dict) or not {"s", "t", "p", "k", "i"} <= decoded.keys():
        raise BadRequest("_cursor is not one this gateway issued", expression="_cursor")
    return decoded
