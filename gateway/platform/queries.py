"""Query platform records through the indexes the worker keeps: no query scans a tenant.

Filters: ``patient`` and ``status`` (sets, intersected in Redis), a date range on the record's main date
(``from``/``to`` on the sort index) and ``updated_since`` (the update index). Results are ordered by the main date,
then id; the cursor is the last (date, id) returned, so paging neither repeats nor skips under concurrent writes.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.errors import BadRequest
from gateway.store.connection import text
from gateway.store.keys import Keyspace


@dataclass
class RecordQuery:
    """A parsed record query."""

    patient: str | None = None
    status: str | None = None
    low: float | None = None  # main date >= low (epoch seconds)
    high: float | None = None  # main date < high
    updated_since: float | None = None
    limit: int = 100
    cursor: tuple[float, str] | None = None


def encode_cursor(score: float, rid: str) -> str:
    """Return an opaque cursor after (score, id)."""
    return base64.urlsafe_b64encode(f"r1|{score!r}|{rid}".encode()).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[float, str] | None:
    """Return the (score, id) of a cursor, or raise BadRequest."""
    if not value:
        return None
    try:
        prefix, score, rid = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().split("|", 2)
        if prefix != "r1" or not math.isfinite(float(score)):
            raise ValueError
        return float(score), rid
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor is not one this gateway issued", expression="cursor") from None


async def run(
    redis: Redis, keys: Keyspace, tenant: str, record_type: str, q: RecordQuery
) -> tuple[list[str], str | None]:
    """Return one page of record ids and the cursor of the next page (None on the last)."""
    sort_key = keys.record_sort_index(tenant, record_type)
    sets = []
    if q.patient:
        sets.append(keys.record_patient_index(tenant, record_type, q.patient))
    if q.status:
        sets.append(keys.record_status_index(tenant, record_type, q.status))
    candidates: list[str] | None = None
    if sets:
        candidates = sorted(text(m) for m in await redis.sinter(sets))
    elif q.updated_since is not None:
        raw: Any = await redis.zrangebyscore(
            keys.record_updated_index(tenant, record_type), f"({q.updated_since}", "+inf"
        )
        candidates = sorted(text(m) for m in raw)

    if candidates is not None:
        pipe = redis.pipeline(transaction=False)
        for rid in candidates:
            pipe.zscore(sort_key, rid)
        if q.updated_since is not None:
            for rid in candidates:
                pipe.zscore(keys.record_updated_index(tenant, record_type), rid)
        scores = await pipe.execute()
        sort_scores, updated = scores[: len(candidates)], scores[len(candidates) :]
        rows = []
        for i, rid in enumerate(candidates):
            score = sort_scores[i]
            if score is None:
                if q.updated_since is None:
                    continue  # deleted: only a sync by updated_since reports deletions
                score = 0.0
            if q.updated_since is not None and (updated[i] is None or updated[i] <= q.updated_since):
                continue
            rows.append((float(score), rid))
    else:
        rank: Any = None
        if q.cursor is not None and await redis.zscore(sort_key, q.cursor[1]) == q.cursor[0]:
            rank = await redis.zrank(sort_key, q.cursor[1])
        if rank is not None:
            # Continue right after the cursor's member: cheap even when thousands share one date.
            raw = await redis.zrange(sort_key, int(rank) + 1, int(rank) + q.limit + 1, withscores=True)
        else:
            low: Any = "-inf" if q.low is None else q.low
            if q.cursor is not None:
                low = q.cursor[0] if q.low is None else max(q.low, q.cursor[0])
            high = "+inf" if q.high is None else f"({q.high}"
            raw = await redis.zrangebyscore(sort_key, low, high, start=0, num=q.limit + 1001, withscores=True)
        rows = [(float(score), text(m)) for m, score in raw]
    rows = [
        r
        for r in rows
        if (q.low is None or r[0] >= q.low) and (q.high is None or r[0] < q.high) and (q.cursor is None or r > q.cursor)
    ]
    rows.sort()
    page = rows[: q.limit]
    more = len(rows) > q.limit
    return [rid for _, rid in page], (encode_cursor(*page[-1]) if more and page else None)
