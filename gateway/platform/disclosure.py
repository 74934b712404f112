"""Which records a platform client may see in full: sensitive ones only with the ``sensitive`` scope.

A record is sensitive when any FHIR resource it came from carries a restricting confidentiality label (R, V) or a
sensitivity label (ETH, SUD, PSY, PSYTHPN, 42CFRPart2). Others see it withheld: its id, type and a ``withheld``
marker, never its content; the same rule holds for queries, the change feed and webhooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SENSITIVE_CODES = frozenset({"R", "V", "ETH", "SUD", "PSY", "PSYTHPN", "42CFRPart2"})
SCOPE = "sensitive"


def is_sensitive(record: Mapping[str, Any]) -> bool:
    """Tell whether a record carries a label that restricts who may read it."""
    labels = record.get("security") or []
    return any(isinstance(label, Mapping) and label.get("code") in SENSITIVE_CODES for label in labels)


def withheld(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a client without the scope sees of a sensitive record."""
    return {"id": record.get("id"), "record_type": record.get("record_type"), "withheld": True}


def visible(record: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    """Return the record as this client may see it."""
    if SCOPE not in scopes and is_sensitive(record):
        return withheld(record)
    return dict(record)


def visible_event(event: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    """Return a change event as this client may see it (the record inside withheld when sensitive)."""
    record = event.get("record")
    if isinstance(record, Mapping):
        return {**event, "record": visible(record, scopes)}
    return dict(event)
