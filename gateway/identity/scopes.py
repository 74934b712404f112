"""Scopes: SMART v2 ``system/`` scopes for the FHIR edge, ``platform/`` scopes for the platform API, and the
plain scopes ``sensitive``, ``audit`` and ``all-tenants``; what each request needs, and what a client may be granted.

FHIR (SMART App Launch 2.0, "scopes for requesting FHIR resources"): ``system/<Type|*>.<letters>``, the letters a
subset of ``cruds`` in that order: c create, r read (read, vread, instance history), u update (PUT, PATCH,
conditional update), d delete (also conditional delete), s search (search, type and system history). The SMART v1
forms ``.read`` (= ``rs``), ``.write`` (= ``cud``) and ``.*`` (= ``cruds``) are read as their v2 equivalents.

Platform API (``/platform/v1``), a small fixed set:

- ``platform/records.read``: records, the change feed, the schema, risk flags (reading)
- ``platform/risk-flags.write``: acknowledging a risk flag
- ``platform/writebacks.read`` / ``platform/writebacks.write``: reading / sending write-backs
- ``platform/webhooks.manage``: webhook subscriptions and their dead letters

Roles of the clients file map to scope sets (``ROLE_SCOPES``): a client lists its own SMART or platform scopes to
narrow what its role allows; a client that lists none has its role's whole set, as static tokens always had.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "ALL_TENANTS",
    "AUDIT",
    "LETTERS",
    "PLATFORM_SCOPES",
    "ROLE_SCOPES",
    "SENSITIVE",
    "FhirScope",
    "bundle_needs",
    "fhir_letter",
    "grant",
    "missing_fhir",
    "parse_fhir",
    "platform_scope",
    "registered",
    "valid_scope",
]

LETTERS = "cruds"
SENSITIVE = "sensitive"  # may see records labelled sensitive (gateway.platform.disclosure)
AUDIT = "audit"  # may read the audit trail
ALL_TENANTS = "all-tenants"  # an admin scope: operate every tenant, not only the client's own
PLATFORM_SCOPES = (
    "platform/records.read",
    "platform/risk-flags.write",
    "platform/writebacks.read",
    "platform/writebacks.write",
    "platform/webhooks.manage",
)
ROLE_SCOPES: Mapping[str, frozenset[str]] = {
    "ehr": frozenset({"system/*.cruds"}),
    "platform": frozenset(PLATFORM_SCOPES),
    "admin": frozenset(),
}
_PLAIN = (SENSITIVE, AUDIT, ALL_TENANTS)
_FHIR = re.compile(r"^system/(\*|[A-Z][A-Za-z]{1,63})\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"*": "cruds", "read": "rs", "write": "cud"}


@dataclass(frozen=True)
class FhirScope:
    """A ``system/`` scope: a resource type (or ``*``) and its interaction letters."""

    rtype: str
    letters: str

    def __str__(self) -> str:
        return f"system/{self.rtype}.{self.letters}"


@lru_cache(maxsize=1024)
def parse_fhir(scope: str) -> FhirScope | None:
    """Return the ``system/`` scope ``scope`` names, or None when it is not one (or has no letters).

    Cached: every FHIR request checks its caller's few scopes, parsed again and again otherwise.
    """
    match = _FHIR.match(scope)
    if match is None:
        return None
    letters = _V1.get(match.group(2), match.group(2))
    return FhirScope(match.group(1), letters) if letters else None


def valid_scope(scope: str) -> bool:
    """Tell whether the gateway knows ``scope``."""
    return parse_fhir(scope) is not None or scope in PLATFORM_SCOPES or scope in _PLAIN


def _letters(scopes: Iterable[str], rtype: str) -> set[str]:
    found: set[str] = set()
    for scope in scopes:
        parsed = parse_fhir(scope)
        if parsed is not None and parsed.rtype in ("*", rtype):
            found |= set(parsed.letters)
    return found


def missing_fhir(scopes: Iterable[str], needs: Iterable[tuple[str, str]]) -> str | None:
    """Return the first scope that ``needs`` ((type, letter) pairs) asks for and ``scopes`` lack, or None."""
    held = list(scopes)
    for rtype, letter in sorted(set(needs)):
        if letter not in _letters(held, rtype):
            return f"system/{rtype}.{letter}"
    return None


def registered(role: str, scopes: Iterable[str]) -> frozenset[str]:
    """Return the scopes a client of the clients file holds: its own SMART/platform scopes, else its role's."""
    listed = frozenset(scopes)
    narrowing = {s for s in listed if s.startswith(("system/", "platform/"))}
    return listed if narrowing else listed | ROLE_SCOPES.get(role, frozenset())


def grant(requested: Iterable[str], held: Iterable[str]) -> list[str]:
    """Return the scopes to grant: each requested scope narrowed to what ``held`` (registered) allows."""
    held = frozenset(held)
    granted: set[str] = set()
    for scope in requested:
        parsed = parse_fhir(scope)
        if parsed is None:
            if scope in held:
                granted.add(scope)
            continue
        if parsed.rtype == "*":
            # "*" asked: grant each held scope as far as the request's letters reach.
            for own in filter(None, map(parse_fhir, held)):
                letters = _ordered(set(own.letters) & set(parsed.letters))
                if letters:
                    granted.add(str(FhirScope(own.rtype, letters)))
            continue
        letters = _ordered(_letters(held, parsed.rtype) & set(parsed.letters))
        if letters:
            granted.add(str(FhirScope(parsed.rtype, letters)))
    return sorted(granted)


def _ordered(letters: set[str]) -> str:
    return "".join(c for c in LETTERS if c in letters)


# (method, route template below /fhir/R4) -> the letter it needs; the type comes from the path.
_FHIR_ROUTES = {
    ("GET", "/{rtype}/{rid}"): "r",
    ("GET", "/{rtype}/{rid}/_history/{vid}"): "r",
    ("GET", "/{rtype}/{rid}/_history"): "r",
    ("GET", "/{rtype}"): "s",
    ("POST", "/{rtype}/_search"): "s",
    ("GET", "/{rtype}/_history"): "s",
    ("GET", "/_history"): "s",
    ("POST", "/{rtype}"): "c",
    ("PUT", "/{rtype}/{rid}"): "u",
    ("PATCH", "/{rtype}/{rid}"): "u",
    ("PUT", "/{rtype}"): "u",
    ("DELETE", "/{rtype}/{rid}"): "d",
    ("DELETE", "/{rtype}"): "d",
}


def fhir_letter(method: str, template: str) -> str | None:
    """Return the interaction letter a FHIR route needs, or None for a route no letter governs (``$validate``,
    Bundles, whose entries are checked one by one)."""
    return _FHIR_ROUTES.get((method, template))


def bundle_needs(bundle: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Return the (type, letter) pairs the entries of a posted Bundle need.

    A transaction or batch entry needs its request's letter; an import (collection, searchset, history) stores
    each resource, creating or updating it, so it needs ``c`` and ``u`` for the resource's type.
    """
    needs: set[tuple[str, str]] = set()
    entries = bundle.get("entry")
    requests = bundle.get("type") in ("transaction", "batch")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        declared = resource.get("resourceType") if isinstance(resource, dict) else None
        request = entry.get("request")
        if requests and isinstance(request, dict):
            method, url = request.get("method"), request.get("url")
            path = url.split("?", 1)[0].strip("/").split("/") if isinstance(url, str) else [""]
            rtype = path[0] or (declared if isinstance(declared, str) else "*")
            if method in ("GET", "HEAD"):
                needs.add((rtype, "r" if len(path) > 1 and path[1] != "_history" else "s"))
            elif isinstance(method, str) and (letter := _WRITE_LETTERS.get(method)) is not None:
                needs.add((rtype, letter))
        elif isinstance(declared, str):
            needs |= {(declared, "c"), (declared, "u")}
    return needs


_WRITE_LETTERS = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


def platform_scope(method: str, template: str) -> str | None:
    """Return the scope a platform request (its path, or its route's template) needs, or None outside the API."""
    if template.startswith("/platform/v1/subscriptions"):
        return "platform/webhooks.manage"
    if template.startswith("/platform/v1/risk-flags"):
        return "platform/records.read" if method == "GET" else "platform/risk-flags.write"
    if template.startswith("/platform/v1/audit"):
        return AUDIT
    if template.startswith("/platform/v1/writebacks"):
        return "platform/writebacks.read"
    if template.startswith("/platform/v1"):
        # Every other write of the platform API sends a write-back (messages, survey responses, appointments...).
        return "platform/records.read" if method == "GET" else "platform/writebacks.write"
    return None
