"""Read platform records and the per-tenant change feed."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.connection import text
from gateway.errors import BadRequest, NotFound
from gateway.keys import Keyspace

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
START = "0-0"


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
    if prefix != "f1" or not _STREAM_ID.match(entry_id):
        raise BadRequest("cursor is not one this gateway issued", expression="cursor")
    return entry_id


@dataclass
class Page:
    """A page of change events and the cursor to continue from."""

    events: list[dict[str, Any]]
    next_cursor: str


class Feed:
    """The tenant's change feed and its records."""

    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys

    async def changes(self, tenant: str, cursor: str | None, limit: int, wait_seconds: float) -> Page:
        """Return events after ``cursor``, waiting up to ``wait_seconds`` for the first one."""
        after = decode_cursor(cursor)
        key = self._keys.feed(tenant)
        entries: Any = await self._redis.xrange(key, min=f"({after}" if after != START else "-", count=limit)
        if not entries and wait_seconds > 0:
            reply: Any = await self._redis.xread({key: after}, count=limit, block=max(int(wait_seconds * 1000), 1))
            entries = reply[0][1] if reply else []
        events = []
        for entry_id, fields in entries:
            position = text(entry_id)
            event = json.loads(fields[b"e"])
            event["cursor"] = encode_cursor(position)
            events.append(event)
        next_cursor = events[-1]["cursor"] if events else (cursor or encode_cursor(START))
        return Page(events, next_cursor)

    async def record(self, tenant: str, record_type: str, rid: str) -> dict[str, Any]:
        """Return one record, or raise NotFound."""
        raw = await self._redis.hget(self._keys.record(tenant, record_type, rid), "json")
        if raw is None:
            raise NotFound(f"no {record_type} {rid}")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def records(self, tenant: str, record_type: str, ids: list[str]) -> list[dict[str, Any] | None]:
        """Return the record for each id, None where there is none."""
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._keys.record(tenant, record_type, rid), "json")
        return [json.loads(raw) if raw is not None else None for raw in await pipe.execute()]
