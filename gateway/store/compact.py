"""The compact form a version is stored in, read as bytes: what its first bytes say, so a read can send it as is.

The store writes every version in one compact form (``gateway.encoding.dumps``) that begins
``{"resourceType":"T","id":"I","meta":{"versionId":"V","lastUpdated":"L"`` and that reading and writing again gives
back byte for byte. ``head`` recognises that beginning; a version written in another form (by a gateway from
before that form, with spaces after the separators) is not recognised, and is parsed and written again as reads
always did, so a client gets the same bytes either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway import encoding
from gateway.store import audit

# The strings may hold no quote and no escape, so what is captured is exactly the string's value.
_HEAD = re.compile(
    rb'\{"resourceType":"([^"\\]*)","id":"([^"\\]*)","meta":\{"versionId":"([^"\\]*)","lastUpdated":"([^"\\]*)"[,}]'
)


@dataclass(frozen=True)
class Head:
    """What the beginning of a version in the compact form says: its type, id, versionId and lastUpdated."""

    rtype: str
    rid: str
    version_id: str
    last_updated: str


def head(raw: bytes) -> Head | None:
    """Return what a stored version in the compact form begins with, or None for any other form."""
    found = _HEAD.match(raw)
    if found is None:
        return None
    rtype, rid, version_id, last_updated = (part.decode() for part in found.groups())
    return Head(rtype, rid, version_id, last_updated)


def is_compact(raw: bytes) -> bool:
    """Tell whether a stored version is in the compact form (``head`` would recognise it)."""
    return _HEAD.match(raw) is not None


def note_read(raw: bytes, found: Head | None) -> None:
    """Remember, for the request's audit entry, which patient the version read is about (``audit.patient_of``).

    Parsed only when it may say: a Patient names itself, and another type only in a ``subject`` or ``patient``.
    """
    request = audit.current.get()
    if request is None or request.patient:
        return
    if found is not None and found.rtype == "Patient":
        request.patient = f"Patient/{found.rid}"
    elif found is None or b'"subject"' in raw or b'"patient"' in raw:
        audit.note_read(encoding.loads(raw))
