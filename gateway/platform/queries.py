"""Query platform records through the indexes the worker keeps: no query scans a tenant.

Filters: ``patient`` and ``status`` (sets, intersected in Redis), a date range on the record's main date
(``from``/``to`` on the sort index) and ``updated_since`` (the update index). Results are ordered by the main date,
then id; the cursor is the last (date, id) returned, so paging neither repeats nor skips under concurrent writes.
Records the caller may not see (``gateway.platform.disclosure``) are skipped before paging, as if they did not exist.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from gateway.errors import BadRequest
from gateway.store.connection import text
from gateway.store.keys import Keyspace

_MAX_STEP = 5000  # rows one step of a query reads at most while filling a page past refused records


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
    redis: Redis,
    keys: Keyspace,
    tenant: str,
    record_type: str,
    q: RecordQuery,
    load: Callable[[list[str]], Awaitable[list[dict[str, Any] | None]]],
    keep: Callable[[dict[str, Any]], bool],
) -> tuple[list[dict[str, Any]], str | None]:
    """Return one page of the records ``keep`` admits, and the cursor of the next page (None on the last).

    Records ``keep`` refuses are skipped before paging, so the page, its size and its cursor are what they would be
    if those records did not exist: a page is filled from further on, and the last page has no cursor even when
    refused records follow it.
    """
    found: list[tuple[tuple[float, str], dict[str, Any]]] = []
    step = replace(q, limit=q.limit + 1)
    while True:
        rows, more = await _rows(redis, keys, tenant, record_type, step)
        for row, record in zip(rows, await load([rid for _, rid in rows]), strict=True):
            if record is not None and keep(record):
                found.append((row, record))
        if len(found) > q.limit or not more or not rows:
            break
        step.cursor = rows[-1]
        step.limit = min(step.limit * 2, _MAX_STEP)  # many refused in a row: read on in longer steps
    page = found[: q.limit]
    more = len(found) > q.limit
    return [record for _, record in page], (encode_cursor(*page[-1][0]) if more and page else None)


async def _rows(
    redis: Redis, keys: Keyspace, tenant: str, record_type: str, q: RecordQuery
) -> tuple[list[tuple[float, str]], bool]:
    """Return one page of (main date, id) rows and whether more follow."""
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
    return rows[: q.limit], len(rows) > q.limit
