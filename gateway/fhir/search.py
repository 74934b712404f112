"""FHIR search over the store's indexes: ``_id``, ``identifier``, ``patient``, ``_lastUpdated``, ``_count``."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis

from conformance.outcome import Issue
from gateway.errors import BadRequest
from gateway.store.connection import text
from gateway.store.indexing import indexes_patient
from gateway.store.keys import Keyspace

SEARCH_PARAMS = ("_id", "identifier", "patient", "_lastUpdated")
CONTROL_PARAMS = ("_count", "_cursor", "_format", "_pretty")


def search_params_for(rtype: str) -> tuple[str, ...]:
    """Return the search parameters that can match a resource of ``rtype`` (``patient`` only where it can)."""
    return SEARCH_PARAMS if indexes_patient(rtype) else tuple(p for p in SEARCH_PARAMS if p != "patient")


_DATE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<h>\d{2}):(?P<m>\d{2})(:(?P<s>\d{2})(?P<frac>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _date_range(raw: str) -> tuple[str, float, float]:
    """Return (prefix, low ms, high ms) of a FHIR date search value: the interval its precision covers."""
    match = _DATE.match(raw)
    if not match:
        raise BadRequest(f"_lastUpdated value is not a FHIR date: {raw[:40]!r}", expression="_lastUpdated")
    g = match.groupdict()
    prefix = g["prefix"] or "eq"
    if prefix not in ("eq", "gt", "lt", "ge", "le"):
        raise BadRequest(f"_lastUpdated prefix {prefix} is not supported", expression="_lastUpdated")
    tz = g["tz"] or "Z"
    offset = (
        timedelta(0) if tz == "Z" else timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) * (1 if tz[0] == "+" else -1)
    )
    try:
        start = datetime(
            int(g["year"]), int(g["month"] or 1), int(g["day"] or 1),
            int(g["h"] or 0), int(g["m"] or 0), int(g["s"] or 0),
            int(float(g["frac"] or 0) * 1_000_000), tzinfo=UTC,
        ) - offset  # fmt: skip
        if g["frac"]:
            end = start + timedelta(milliseconds=1)
        elif g["s"]:
            end = start + timedelta(seconds=1)
        elif g["m"]:
            end = start + timedelta(minutes=1)
        elif g["day"]:
            end = start + timedelta(days=1)
        elif g["month"]:
            end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            end = start.replace(year=start.year + 1)
    except (ValueError, OverflowError):
        # Out of the calendar (a 13th month) or of datetime's range (the end of year 9999).
        raise BadRequest(f"_lastUpdated value is not a valid date: {raw[:40]!r}", expression="_lastUpdated") from None
    return prefix, start.timestamp() * 1000, end.timestamp() * 1000


@dataclass
class Query:
    """A parsed search."""

    ids: list[str] | None = None
    identifiers: list[tuple[str | None, str]] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    low: float = float("-inf")
    high: float = float("inf")
    count: int = 50
    cursor: tuple[float, str] | None = None
    ignored: list[str] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)


def parse_query(params: list[tuple[str, str]], default_count: int, max_count: int) -> Query:
    """Parse search parameters, or raise BadRequest naming the bad one."""
    q = Query(count=default_count)
    for name, value in params:
        base = name.split(":", 1)[0]
        if name == "_count":
            if not value.isdigit():
                raise BadRequest("_count must be a non-negative integer", expression="_count")
            q.count = min(int(value), max_count)
        elif name == "_cursor":
            q.cursor = _decode_cursor(value)
        elif name in ("_format", "_pretty"):
            continue
        elif name == "_id":
            ids = [v for v in value.split(",") if v]
            q.ids = ids if q.ids is None else [i for i in q.ids if i in ids]
            q.echo.append((name, value))
        elif name == "identifier":
            for token in value.split(","):
                system, bar, code = token.rpartition("|")
                q.identifiers.append((system if bar else None, code if bar else token))
            q.echo.append((name, value))
        elif name == "patient":
            for ref in value.split(","):
                q.patients.append(ref if "/" in ref else f"Patient/{ref}")
            q.echo.append((name, value))
        elif name == "_lastUpdated":
            prefix, low, high = _date_range(value)
            if prefix == "eq":
                q.low, q.high = max(q.low, low), min(q.high, high - 0.001)
            elif prefix == "gt":
                q.low = max(q.low, high)
            elif prefix == "ge":
                q.low = max(q.low, low)
            elif prefix == "lt":
                q.high = min(q.high, low - 0.001)
            elif prefix == "le":
                q.high = min(q.high, high - 0.001)
            q.echo.append((name, value))
        elif base in SEARCH_PARAMS:
            raise BadRequest(f"modifier on {base} is not supported", expression=name)
        else:
            q.ignored.append(name)
    return q


def encode_cursor(score: float, rid: str) -> str:
    """Return an opaque paging cursor after (score, id)."""
    return base64.urlsafe_b64encode(f"{score!r}|{rid}".encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[float, str]:
    try:
        text = base64.urlsafe_b64decode(unquote(value) + "=" * (-len(value) % 4)).decode()
        score, _, rid = text.partition("|")
        return float(score), rid
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("_cursor is not one this gateway issued", expression="_cursor") from None


@dataclass
class Hits:
    """One page of matching ids, the total, and where the next page starts."""

    ids: list[str]
    total: int
    next_cursor: str | None
    issues: list[Issue]


async def run_search(redis: Redis, keys: Keyspace, tenant: str, rtype: str, q: Query) -> Hits:
    """Find the ids matching ``q``, ordered by lastUpdated then id."""
    lu_key = keys.last_updated_index(tenant, rtype)
    candidates: set[str] | None = None
    if q.ids is not None:
        candidates = set(q.ids)
    if q.identifiers:
        found = await redis.sunion([keys.identifier_index(tenant, rtype, s, v) for s, v in q.identifiers])
        matched = {text(m) for m in found}
        candidates = matched if candidates is None else candidates & matched
    if q.patients:
        found = await redis.sunion([keys.patient_index(tenant, rtype, p) for p in q.patients])
        matched = {text(m) for m in found}
        candidates = matched if candidates is None else candidates & matched

    if candidates is not None:
        ordered = sorted(candidates)
        pipe = redis.pipeline(transaction=False)
        for rid in ordered:
            pipe.zscore(lu_key, rid)
        scored = [
            (score, rid)
            for rid, score in zip(ordered, await pipe.execute(), strict=True)
            if score is not None and q.low <= score <= q.high
        ]
        scored.sort()
        total = len(scored)
        if q.cursor is not None:
            scored = [s for s in scored if s > q.cursor]
    else:
        total = await redis.zcount(lu_key, q.low, q.high)
        rank: int | None = None
        if q.cursor is not None and await redis.zscore(lu_key, q.cursor[1]) == q.cursor[0]:
            found_rank: Any = await redis.zrank(lu_key, q.cursor[1])
            rank = int(found_rank) if found_rank is not None else None
        if rank is not None:
            # Continue right after the cursor's member: cheap even when thousands share one lastUpdated.
            raw: Any = await redis.zrange(lu_key, rank + 1, rank + q.count + 1, withscores=True)
        else:
            low = q.low if q.cursor is None else max(q.low, q.cursor[0])
            raw = await redis.zrangebyscore(lu_key, low, q.high, start=0, num=q.count + 1001, withscores=True)
        scored = [(float(score), text(m)) for m, score in raw if q.low <= float(score) <= q.high]
        if q.cursor is not None:
            scored = [s for s in scored if s > q.cursor]
    page = scored[: q.count]
    more = len(scored) > q.count
    issues = [
        Issue("warning", "not-supported", name, f"search parameter {name} is not supported and was ignored")
        for name in q.ignored
    ]
    return Hits(
        ids=[rid for _, rid in page],
        total=total,
        next_cursor=encode_cursor(*page[-1]) if more and page else None,
        issues=issues,
    )
