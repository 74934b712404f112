"""Which records exist for a platform client: sensitive ones only for a client with the ``sensitive`` scope.

A record is sensitive when any FHIR resource it came from carries a restricting confidentiality label (R, V) or a
sensitivity label (ETH, SUD, PSY, PSYTHPN, 42CFRPart2). For a client without the scope a sensitive record does not
exist, not even as metadata: queries skip it before paging (so filters, page sizes and cursors are what they would
be without it), a read by id is the same 404 as an unknown id, its events are passed over on the change feed and by
the client's webhooks (the cursor moves on past them), its risk flags are not listed, and a write-back naming it is
the 404 of a missing target with nothing queued. A client with the scope sees everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "SCOPE",
    "SENSITIVE_CODES",
    "is_sensitive",
    "label_codes",
    "resource_is_sensitive",
    "shown",
    "shown_codes",
    "shown_event",
]

SENSITIVE_CODES = frozenset({"R", "V", "ETH", "SUD", "PSY", "PSYTHPN", "42CFRPart2"})
SCOPE = "sensitive"


def _labelled(labels: Any) -> bool:
    return isinstance(labels, list) and any(
        isinstance(label, Mapping) and label.get("code") in SENSITIVE_CODES for label in labels
    )


def is_sensitive(record: Mapping[str, Any]) -> bool:
    """Tell whether a normalized record carries a label that restricts who may read it."""
    return _labelled(record.get("security"))


def resource_is_sensitive(resource: Mapping[str, Any]) -> bool:
    """Tell whether a FHIR resource carries such a label in ``meta.security``."""
    meta = resource.get("meta")
    return isinstance(meta, Mapping) and _labelled(meta.get("security"))


def shown(record: Mapping[str, Any], scopes: Iterable[str]) -> bool:
    """Tell whether the record exists for a client with these scopes."""
    return SCOPE in scopes or not is_sensitive(record)


def shown_event(event: Mapping[str, Any], scopes: Iterable[str]) -> bool:
    """Tell whether a change event exists for a client with these scopes (judged by the record it carries)."""
    record = event.get("record")
    return not isinstance(record, Mapping) or shown(record, scopes)


def label_codes(record: Any) -> tuple[str, ...]:
    """Return the codes of a record's security labels (none for what is not a record), as the feed keeps them."""
    labels = record.get("security") if isinstance(record, Mapping) else None
    if not isinstance(labels, list):
        return ()
    return tuple(code for label in labels if isinstance(label, Mapping) and isinstance(code := label.get("code"), str))


def shown_codes(codes: Iterable[str], scopes: Iterable[str]) -> bool:
    """Tell whether a change event whose record has labels with these codes exists for a client with these scopes."""
    return SCOPE in scopes or not any(code in SENSITIVE_CODES for code in codes)
