"""The compact form a version is stored in, read as bytes: what its first bytes say, so a read can send it as is.

The store writes every version in one compact form (``gateway.encoding.dumps``) that begins
``{"resourceType":"T","id":"I","meta":{"versionId":"V","lastUpdated":"L"`` and that reading and writing again gives
back byte for byte. ``head`` recognises that beginning; a version written in another form (by a gateway from
before that form, with spaces after the separators) is not recognised, and is parsed and written again as reads
always did, so a client gets the same bytes either way.
"""

from __future__ import annotations

import re

from gateway import encoding
from gateway.store import audit

# The strings may hold no quote and no escape, so what is captured is exactly the string's value.
_HEAD = re.compile(
    rb'\{"resourceType":"([^"\\]*)","id":"([^"\\]*)","meta":\{"versionId":"([^"\\]*)","lastUpdated":"([^"\\]*)"[,}]'
)


class Head:
    """What the beginning of a version in the compact form says: its type, id, versionId and lastUpdated."""

    __slots__ = ("_found",)

    def __init__(self, found: re.Match[bytes]) -> None:
        self._found = found  # each part is decoded only when asked for: a read needs two of the four

    @property
    def rtype(self) -> str:
        return self._found[1].decode()

    @property
    def rid(self) -> str:
        return self._found[2].decode()

    @property
    def version_id(self) -> str:
        return self._found[3].decode()

    @property
    def last_updated(self) -> str:
        return self._found[4].decode()


def head(raw: bytes) -> Head | None:
    """Return what a stored version in the compact form begins with, or None for any other form."""
    found = _HEAD.match(raw)
    return None if found is None else Head(found)


def is_compact(raw: bytes) -> bool:
    """Tell whether a stored version is in the compact form (``head`` would recognise it)."""
    return _HEAD.match(raw) is not None


def note_read(raw: bytes) -> None:
    """Remember, for the request's audit entry, which patient the version read is about (``audit.patient_of``).

    Parsed only when it may name one: a Patient names itself, another resource only in a ``subject`` or ``patient``
    (JSON writes these names and ``"Patient"`` as they are, in any form the store ever wrote).
    """
    request = audit.current.get()
    if request is None or request.patient:
        return
    if b'"subject"' in raw or b'"patient"' in raw or b'"Patient"' in raw:
        audit.note_read(encoding.loads(raw))
