"""What the store is asked to do and what it answers: the operations (create, update, delete), their results, and
a resource's current state as the store holds it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.outcome import Issue
from gateway import encoding
from gateway.store.connection import text
from gateway.store.indexing import IndexEntry, unpack_index


def digest(content: Mapping[str, Any]) -> str:
    """Return a stable digest of resource content."""
    return hashlib.sha256(encoding.canonical(content)).hexdigest()


@dataclass(frozen=True)
class Current:
    """The current state of one resource as the store holds it."""

    vid: int
    last_updated: str
    digest: str
    deleted: bool
    ehr_version_id: str | None
    ehr_last_updated: str | None
    index: list[IndexEntry]

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Current | None:
        if not raw:
            return None
        get = {text(k): text(v) for k, v in raw.items()}
        return cls(
            vid=int(get["vid"]),
            last_updated=get.get("lu", ""),
            digest=get.get("hash", ""),
            deleted=get.get("deleted") == "1",
            ehr_version_id=get.get("evid") or None,
            ehr_last_updated=get.get("elu") or None,
            index=unpack_index(encoding.loads(get.get("idx") or "[]")),
        )


@dataclass
class Create:
    """POST: a new resource, unless ``if_none_exist`` matches one."""

    rtype: str
    resource: dict[str, Any]
    if_none_exist: str | None = None
    full_url: str | None = None
    path: str | None = None
    issues: list[Issue] = field(default_factory=list)  # errors a lenient policy accepted; kept with the version
    dedupe: bool = True  # an identical plain create within the dedupe window answers with the first resource


@dataclass
class Update:
    """PUT: create or update the resource with this id, or the one ``criteria`` matches (conditional)."""

    rtype: str
    rid: str
    resource: dict[str, Any]
    if_match: str | None = None
    full_url: str | None = None
    criteria: str | None = None
    path: str | None = None
    issues: list[Issue] = field(default_factory=list)  # errors a lenient policy accepted; kept with the version
    # The body is the EHR's own copy (the poller, or a push that says so): a ``meta.lastUpdated`` older than the
    # EHR version held means it arrived late, and it is not applied. Otherwise the body's meta orders nothing
    # (R4 http.html: a server SHALL ignore the versionId and lastUpdated of an update's body).
    ehr_ordered: bool = False


@dataclass
class Delete:
    """DELETE: leave a tombstone on the resource with this id, or the one ``criteria`` matches."""

    rtype: str
    rid: str
    criteria: str | None = None
    path: str | None = None


Operation = Create | Update | Delete


def condition_of(op: Operation) -> str | None:
    """Return the condition of a conditional operation (If-None-Exist, or a conditional update's or delete's)."""
    return op.if_none_exist if isinstance(op, Create) else op.criteria


@dataclass
class Result:
    """What one operation did."""

    status: int
    rtype: str
    rid: str
    vid: int | None = None
    last_updated: str | None = None
    resource: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    # created, updated, deleted (a new version was written), or unchanged, matched, stale, absent (none was)
    outcome: str = "unchanged"
    # The version just written, as stored: ``encoding.dumps(resource)``, so an answer splices these bytes in instead
    # of writing the resource again (None when the store did not write it: an answer then writes ``resource``).
    raw: bytes | None = None

    @property
    def location(self) -> str | None:
        return f"{self.rtype}/{self.rid}/_history/{self.vid}" if self.vid else None

    @property
    def etag(self) -> str | None:
        return f'W/"{self.vid}"' if self.vid else None
