"""Versions as history lists them: of one resource (its ``hist`` hash), of a type, or of a whole tenant (the
``vers`` zsets, written with each version in the same commit).

The ``vers`` zsets only grow, so a page that continues after the last member it gave never skips or repeats one
while new versions arrive (they come first, newest first, and a client that started earlier does not see them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway import encoding
from gateway.store.connection import text
from gateway.store.keys import Keyspace


@dataclass(frozen=True)
class Version:
    """One version: its stored JSON (None for a deletion) and when it was written (epoch ms)."""

    rtype: str
    rid: str
    vid: int
    body: bytes | None
    written_ms: float

    @property
    def resource(self) -> dict[str, Any] | None:
        """Return the version's resource, parsed (None for a deletion)."""
        return encoding.loads(self.body) if self.body else None


@dataclass(frozen=True)
class VersionPage:
    """A page of versions, newest first, how many there are in all, and the member to continue after."""

    versions: list[Version]
    total: int
    after: str | None


async def of_resource(redis: Redis, keys: Keyspace, tenant: str, rtype: str, rid: str) -> list[Version]:
    """Return every version of one resource, newest first (empty when it never existed)."""
    raw: Any = await redis.hgetall(keys.history(tenant, rtype, rid))
    vids = sorted((int(text(v)) for v in raw), reverse=True)
    if not vids:
        return []
    written = await redis.zmscore(keys.type_versions(tenant, rtype), [f"{rid}/{vid}" for vid in vids])
    bodies: dict[int, bytes] = {int(text(v)): body for v, body in raw.items()}
    return [
        Version(rtype, rid, vid, bodies[vid] or None, float(ms or 0)) for vid, ms in zip(vids, written, strict=True)
    ]


async def recent(
    redis: Redis, keys: Keyspace, tenant: str, rtype: str | None, since_ms: float | None, after: str | None, count: int
) -> VersionPage:
    """Return a page of the versions of a type (or, with ``rtype`` None, of every type), newest first."""
    key = keys.type_versions(tenant, rtype) if rtype else keys.all_versions(tenant)
    low = repr(since_ms) if since_ms is not None else "-inf"
    start = 0
    if after is not None:
        rank: Any = await redis.zrevrank(key, after)
        start = int(rank) + 1 if rank is not None else 0
    raw: Any = await redis.zrevrange(key, start, start + count, withscores=True)
    members = [(text(m), float(s)) for m, s in raw if since_ms is None or float(s) >= since_ms]
    total = int(await redis.zcount(key, low, "+inf"))
    page, more = members[:count], len(members) > count
    pipe = redis.pipeline(transaction=False)
    named: list[tuple[str, str, int, float]] = []
    for member, score in page:
        parts = member.split("/")
        kind, rid, vid = (rtype or parts[0], parts[-2], int(parts[-1]))
        named.append((kind, rid, vid, score))
        pipe.hget(keys.history(tenant, kind, rid), str(vid))
    bodies = await pipe.execute() if named else []
    versions = [
        Version(kind, rid, vid, body or None, score)
        for (kind, rid, vid, score), body in zip(named, bodies, strict=True)
    ]
    return VersionPage(versions, total, page[-1][0] if more and page else None)
