"""Read platform records and the per-tenant change feed."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from redis.asyncio import Redis

from gateway import encoding
from gateway.clock import Clock, system_clock
from gateway.errors import BadRequest, Gone, NotFound
from gateway.store.connection import socket_timeout, text
from gateway.store.keys import Keyspace

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX_PART = 2**64 - 1
# A blocking read longer than the client's socket timeout (5 s by default in redis-py) fails with a timeout, so a
# long poll waits in steps no longer than this, or half that timeout when it is shorter.
_BLOCK_STEP_SECONDS = 2.0
# What ``types`` and a webhook's ``events`` may ask for (each pattern is tried on every event read); the one rule,
# used by gateway.webhooks too.
MAX_TYPE_PATTERNS = 50
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,100}$")


def type_patterns(raw: list[str]) -> list[str] | None:
    """Return the event-type patterns of ``types`` (repeated or comma-separated), or raise BadRequest naming it."""
    wanted = list(dict.fromkeys(t.strip() for value in raw for t in value.split(",") if t.strip()))
    if len(wanted) > MAX_TYPE_PATTERNS:
        raise BadRequest(f"types may list at most {MAX_TYPE_PATTERNS} event types or patterns", expression="types")
    if not all(TYPE_PATTERN.match(t) for t in wanted):
        raise BadRequest(
            "an event type or pattern is letters, digits, '_', '.', '-' and the wildcards * ? [ ]", expression="types"
        )
    return wanted or None


START = "0-0"
SCAN_LIMIT = 10_000  # feed entries one request reads at most while filling a page past filtered-out events


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def encode_cursor(entry_id: str) -> str:
    """Return an opaque cursor for a feed position."""
    return base64.urlsafe_b64encode(f"f1:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """Return the feed position of a cursor, or raise BadRequest."""
    if not cursor:
        return START
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor is not one this gateway issued", expression="cursor") from None
    prefix, _, entry_id = text.partition(":")
    if prefix != "f1" or not _STREAM_ID.match(entry_id) or not _readable_after(entry_id):
        raise BadRequest("cursor is not one this gateway issued", expression="cursor")
    return entry_id


def _readable_after(entry_id: str) -> bool:
    """Tell whether Redis can read a stream after this id (each part is 64-bit, and the last id has no after)."""
    ms, seq = _id_tuple(entry_id)
    return ms <= _MAX_PART and seq <= _MAX_PART and (ms, seq) != (_MAX_PART, _MAX_PART)


@dataclass
class Page:
    """A page of change events and the cursor to continue from."""

    events: list[dict[str, Any]]
    next_cursor: str


class Feed:
    """The tenant's change feed and its records."""

    def __init__(self, redis: Redis, keys: Keyspace, *, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        timeout = socket_timeout(redis)
        self._block_step = min(_BLOCK_STEP_SECONDS, timeout / 2) if timeout else _BLOCK_STEP_SECONDS

    async def changes(
        self,
        tenant: str,
        cursor: str | None,
        limit: int,
        wait_seconds: float,
        types: list[str] | None = None,
        *,
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Page:
        """Return events after ``cursor`` (of ``types`` if given), waiting up to ``wait_seconds`` for one.

        Events ``keep`` refuses (sensitive ones, for a client without the scope) are passed over like events of
        other types: the cursor moves past them, and they are neither returned nor counted against ``limit``.
        """
        after = decode_cursor(cursor)
        key = self._keys.feed(tenant)
        if cursor:
            await self._check_retained(tenant, after)
        deadline = time.monotonic() + wait_seconds
        position = after
        while True:
            events: list[dict[str, Any]] = []
            scanned = 0
            while True:
                # Read on until the page is full (or the feed ends), so that passed-over events never show as a
                # short page; at most SCAN_LIMIT entries per request, past which the page is answered as it is.
                count = limit - len(events)
                start = f"({position}" if position != START else "-"
                entries: Any = await self._redis.xrange(key, min=start, count=count)
                scanned += len(entries)
                for entry_id, fields in entries:
                    position = text(entry_id)
                    event = encoding.loads(fields[b"e"])
                    if types and not any(fnmatchcase(event["type"], pattern) for pattern in types):
                        continue
                    if keep is not None and not keep(event):
                        continue
                    event["cursor"] = encode_cursor(position)
                    events.append(event)
                if len(entries) < count or len(events) >= limit or scanned >= SCAN_LIMIT:
                    break
            # The cursor moves past filtered-out events too, so a narrow filter still makes progress.
            next_cursor = encode_cursor(position) if position != after else (cursor or encode_cursor(START))
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return Page(events, next_cursor)
            if not entries:
                step = min(remaining, self._block_step)
                reply: Any = await self._redis.xread({key: position}, count=1, block=max(int(step * 1000), 1))
                if not reply and time.monotonic() >= deadline:
                    return Page([], next_cursor)

    async def _check_retained(self, tenant: str, after: str) -> None:
        """Refuse a cursor from before the retention window, naming the oldest valid one."""
        mark = await self._redis.get(self._keys.feed_trimmed(tenant))
        if mark is None:
            return
        last_dropped = text(mark)
        if _id_tuple(after) < _id_tuple(last_dropped):
            oldest = encode_cursor(last_dropped)
            raise Gone(
                f"the cursor is older than the feed's retention; resume from the oldest valid cursor {oldest}",
                expression="cursor",
                headers={"Gateway-Oldest-Cursor": oldest},
            )

    async def trim(self, tenant: str, retention_seconds: float) -> None:
        """Drop events older than the retention window, remembering the last one dropped.

        A cursor before that event missed something and is answered 410; any later cursor, and a reader that
        starts from the beginning, lose nothing.
        """
        threshold = int((self._clock() - retention_seconds) * 1000)
        key = self._keys.feed(tenant)
        newest_old: Any = await self._redis.xrevrange(key, max=f"({threshold}-0", min="-", count=1)
        if threshold <= 0 or not newest_old:
            return
        # The mark goes first: a reader in between gets a 410 it would have got a moment later anyway.
        await self._redis.set(self._keys.feed_trimmed(tenant), text(newest_old[0][0]))
        await self._redis.xtrim(key, minid=threshold, approximate=False)

    async def record(
        self, tenant: str, record_type: str, rid: str, *, keep: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Return one record, or raise NotFound: also, in the same words, when ``keep`` refuses it."""
        raw = await self._redis.hget(self._keys.record(tenant, record_type, rid), "json")
        result: dict[str, Any] | None = encoding.loads(raw) if raw is not None else None
        if result is None or (keep is not None and not keep(result)):
            raise NotFound(f"no {record_type} has that id", expression="id")
        return result

    async def records(self, tenant: str, record_type: str, ids: list[str]) -> list[dict[str, Any] | None]:
        """Return the record for each id, None where there is none."""
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._keys.record(tenant, record_type, rid), "json")
        return [encoding.loads(raw) if raw is not None else None for raw in await pipe.execute()]
