"""Run a parsed search over the store's indexes: which ids match, in what order, one page at a time.

Every criterion reads index entries the store wrote with the resource (``gateway.store.keys``); nothing lists a
tenant's keys. Criteria are ANDed, a criterion's values ORed.

Paging is stable while resources change. The default order is by id, which never changes: a page continues after
the last id it gave, so nothing is skipped or repeated. A ``_sort`` on ``_lastUpdated`` or a date can move a
resource while a client pages, so the first page fixes a moment, and every page orders first the resources last
written before it, then those written since (each part in the sort order): a resource changed meanwhile is never
skipped; one already seen may come again, with its new version, among those written since.

Date semantics follow R4 (search.html, date): a value covers a range; ``eq`` finds a resource whose range lies
within the value's, ``gt`` one whose range extends after it, ``lt`` before it, ``ge`` / ``le`` either, ``sa`` one
that starts after it, ``eb`` one that ends before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.errors import BadRequest
from gateway.fhir.search import Criterion, Query, encode_cursor
from gateway.store.connection import text
from gateway.store.keys import Keyspace

_INF = float("inf")


@dataclass
class Hits:
    """One page of matching ids, the total (None when not asked for), and the next page's cursor."""

    ids: list[str]
    total: int | None
    next_cursor: str | None


def _score(bound: float, exclusive: bool = False) -> str:
    if math.isinf(bound):
        return "+inf" if bound > 0 else "-inf"
    return f"({bound!r}" if exclusive else repr(bound)


def _point_bounds(prefix: str, low: float, high: float) -> tuple[str, str]:
    """Return ZRANGEBYSCORE bounds for a value that is one instant (``_lastUpdated``)."""
    if prefix == "eq":
        return _score(low), _score(high)
    if prefix in ("gt", "sa"):
        return _score(high, exclusive=True), "+inf"
    if prefix in ("lt", "eb"):
        return "-inf", _score(low, exclusive=True)
    if prefix == "ge":
        return _score(low), "+inf"
    return "-inf", _score(high)  # le


class Matcher:
    """Find the ids of one tenant's resources of one type that match a query."""

    def __init__(self, redis: Redis, keys: Keyspace, tenant: str, rtype: str) -> None:
        self.redis, self.keys, self.tenant, self.rtype = redis, keys, tenant, rtype
        self._lu = keys.last_updated_index(tenant, rtype)
        self._ids = keys.ids_index(tenant, rtype)

    async def _members(self, *set_keys: str) -> set[str]:
        return {text(m) for m in await self.redis.sunion(list(set_keys))} if set_keys else set()

    async def _by_score(self, key: str, low: str, high: str) -> set[str]:
        return {text(m) for m in await self.redis.zrangebyscore(key, low, high)}

    async def _date(self, param: str, prefix: str, low: float, high: float) -> set[str]:
        lo_key = self.keys.date_index(self.tenant, self.rtype, param, "lo")
        hi_key = self.keys.date_index(self.tenant, self.rtype, param, "hi")
        found: set[str] = set()
        if prefix in ("eq", "ge", "le"):  # the resource's range lies within the value's
            starts = sorted(await self._by_score(lo_key, _score(low), _score(high)))
            ends = await self.redis.zmscore(hi_key, starts) if starts else []
            found |= {rid for rid, end in zip(starts, ends, strict=True) if end is not None and end <= high}
        if prefix in ("gt", "ge"):
            found |= await self._by_score(hi_key, _score(high, exclusive=True), "+inf")
        if prefix in ("lt", "le"):
            found |= await self._by_score(lo_key, "-inf", _score(low, exclusive=True))
        if prefix == "sa":
            found |= await self._by_score(lo_key, _score(high, exclusive=True), "+inf")
        if prefix == "eb":
            found |= await self._by_score(hi_key, "-inf", _score(low, exclusive=True))
        return found

    async def _prefix(self, param: str, texts: Iterable[str], exact: bool) -> set[str]:
        key = self.keys.string_index(self.tenant, self.rtype, param, exact=exact)
        found: set[str] = set()
        for value in texts:
            start = value.encode() + (b"\0" if exact else b"")
            members = await self.redis.zrangebylex(key, b"[" + start, b"[" + start + b"\xff")
            found |= {text(m).rpartition("\0")[2] for m in members}
        return found

    async def ids(self, c: Criterion) -> set[str]:
        """Return the ids one criterion matches (any of its values)."""
        k, t, r = self.keys, self.tenant, self.rtype
        if c.kind == "id":
            return set(c.values)
        if c.kind == "lastUpdated":
            found: set[str] = set()
            for prefix, low, high in c.values:
                found |= await self._by_score(self._lu, *_point_bounds(prefix, low, high))
            return found
        if c.kind == "reference":
            return await self._members(*(k.reference_index(t, r, c.param, target) for target in c.values))
        if c.kind == "token":
            return await self._members(*(k.token_index(t, r, c.param, s, code) for s, code in c.values))
        if c.kind == "url":
            return await self._members(*(k.url_index(t, r, url) for url in c.values))
        if c.kind == "date":
            found = set()
            for prefix, low, high in c.values:
                found |= await self._date(c.param, prefix, low, high)
            return found
        return await self._prefix(c.param, c.values, exact=c.kind == "exact")

    async def find(self, q: Query, now_ms: float) -> Hits:
        """Return the page of ids ``q`` asks for."""
        cursor = q.cursor
        if cursor is not None and (cursor["s"], bool(cursor.get("d"))) != (q.sort, q.descending):
            raise BadRequest("_cursor belongs to a search with another _sort", expression="_cursor")
        moment = float(cursor["t"]) if cursor else now_ms
        if not q.criteria and q.sort == "_id":
            return await self._walk_ids(q, cursor, moment)
        candidates: set[str] | None = None
        for criterion in q.criteria:
            matched = await self.ids(criterion)
            candidates = matched if candidates is None else candidates & matched
            if not candidates:
                break
        if candidates is None:
            candidates = {text(m) for m in await self.redis.zrange(self._ids, 0, -1)}
        ordered = sorted(candidates)
        written = await self.redis.zmscore(self._lu, ordered) if ordered else []
        live = [(rid, lu) for rid, lu in zip(ordered, written, strict=True) if lu is not None]
        if q.sort == "_id":
            items = [(0, 0.0, rid) for rid, _ in live]
        else:
            sort_keys: list[Any] = [lu for _, lu in live]
            if q.sort != "_lastUpdated":
                end = "hi" if q.descending else "lo"
                date_key = self.keys.date_index(self.tenant, self.rtype, q.sort, end)
                sort_keys = await self.redis.zmscore(date_key, [rid for rid, _ in live]) if live else []
            # Without a value, a resource sorts after those that have one, whichever the direction.
            missing = -_INF if q.descending else _INF
            items = [
                (1 if lu > moment else 0, missing if key is None else float(key), rid)
                for (rid, lu), key in zip(live, sort_keys, strict=True)
            ]
        return _page(items, q, cursor, moment)

    async def _walk_ids(self, q: Query, cursor: dict[str, Any] | None, moment: float) -> Hits:
        """Page through every live id in id order, without reading more than a page."""
        after = str(cursor["i"]) if cursor else None
        if q.descending:
            high = b"(" + after.encode() if after else b"+"
            raw = await self.redis.zrevrangebylex(self._ids, high, b"-", start=0, num=q.count + 1)
        else:
            low = b"(" + after.encode() if after else b"-"
            raw = await self.redis.zrangebylex(self._ids, low, b"+", start=0, num=q.count + 1)
        found = [text(m) for m in raw]
        total = int(await self.redis.zcard(self._ids)) if q.total else None
        page, more = found[: q.count], len(found) > q.count
        nxt = _cursor(q, moment, (0, 0.0, page[-1])) if more and page else None
        return Hits(page, total, nxt)


def _after(item: tuple[int, float, str], mark: tuple[int, float, str], descending: bool) -> bool:
    if item[0] != mark[0]:
        return item[0] > mark[0]
    return (item[1], item[2]) < (mark[1], mark[2]) if descending else (item[1], item[2]) > (mark[1], mark[2])


def _cursor(q: Query, moment: float, item: tuple[int, float, str]) -> str:
    return encode_cursor({"s": q.sort, "d": q.descending, "t": moment, "p": item[0], "k": item[1], "i": item[2]})


def _page(items: list[tuple[int, float, str]], q: Query, cursor: dict[str, Any] | None, moment: float) -> Hits:
    """Order (phase, then key and id in the query's direction), continue after the cursor, and cut a page."""
    items.sort(key=lambda i: (i[0], i[1], i[2]))
    if q.descending:
        items = [i for phase in (0, 1) for i in reversed([j for j in items if j[0] == phase])]
    total = len(items) if q.total else None
    if cursor is not None:
        mark = (int(cursor["p"]), float(cursor["k"]), str(cursor["i"]))
        items = [i for i in items if _after(i, mark, q.descending)]
    page, more = items[: q.count], len(items) > q.count
    return Hits([rid for _, _, rid in page], total, _cursor(q, moment, page[-1]) if more and page else None)
