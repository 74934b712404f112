"""Read platform records and the per-tenant change feed."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from redis.asyncio import Redis

from gateway import encoding
from gateway.clock import Clock, system_clock
from gateway.errors import BadRequest, Gone, NotFound
from gateway.platform.disclosure import label_codes
from gateway.store.connection import socket_timeout, text
from gateway.store.keys import Keyspace
from gateway.store.plan import Form, Splice

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


# A feed entry's stream fields: the event's JSON and, beside it, what the filters read (its type and the codes of
# its record's security labels, a JSON list or "" for none), so a page is written from the stored bytes without
# parsing them. An entry written before these fields existed has only the event; it is parsed to be filtered.
EVENT, TYPE, LABELS = b"e", b"type", b"labels"


def entry_fields(event: bytes, event_type: str, codes: Iterable[str]) -> list[str]:
    """Return the stream fields of a feed entry (for XADD): the event's JSON, its type, its record's label codes."""
    listed = list(codes)
    return ["e", event.decode(), "type", event_type, "labels", encoding.dumps(listed).decode() if listed else ""]


# A feed entry's XADD as a plan's form (``Plan.put``, the key the feed): the same command as ``entry_fields`` makes,
# with the field names sent once per commit instead of once per entry.
ENTRY_FORM: Final[Form] = ("XADD", ("*", "e", None, "type", None, "labels", None))


# The same XADD with the event's JSON joined by the commit script from its head (the event up to ``"record":``) and
# the record's JSON that the plan already sends for the record's own write (``Plan.put``'s place of it), and "}".
SPLICED_ENTRY_FORM: Final[Form] = ("XADD", ("*", "e", Splice(b"}"), "type", None, "labels", None))


def entry_values(event: bytes, event_type: str, codes: Iterable[str]) -> tuple[bytes, str, str]:
    """Return the values ``ENTRY_FORM`` takes for a feed entry: the event's JSON (its bytes, which Redis stores as
    the text ``entry_fields`` gives), its type, its record's label codes."""
    return event, event_type, entry_labels(codes)


def entry_labels(codes: Iterable[str]) -> str:
    """Return a feed entry's ``labels`` value: its record's label codes as a JSON list, "" for none."""
    listed = list(codes)
    return encoding.dumps(listed).decode() if listed else ""


@dataclass(slots=True)
class Entry:
    """One feed entry as read: the event's JSON as stored, its type, and the codes of its record's security labels."""

    id: str
    raw: bytes
    type: str
    codes: tuple[str, ...]
    compact: bool  # written with the type and labels beside it, by orjson: the cursor can be spliced into its bytes
    parsed: dict[str, Any] | None = field(default=None, repr=False)  # the event, once something needed it parsed

    @classmethod
    def read(cls, entry_id: Any, fields: Mapping[bytes, Any]) -> Entry:
        """Return the entry of an XRANGE reply item; one without the type and labels fields is parsed for them."""
        raw = _bytes(fields[EVENT])
        if TYPE in fields and LABELS in fields:
            labels = _bytes(fields[LABELS])
            codes = tuple(encoding.loads(labels)) if labels else ()
            return cls(text(entry_id), raw, text(fields[TYPE]), codes, compact=True)
        event: dict[str, Any] = encoding.loads(raw)
        codes = label_codes(event.get("record"))
        return cls(text(entry_id), raw, str(event.get("type", "")), codes, compact=False, parsed=event)

    def event(self) -> dict[str, Any]:
        """Return the event (parsed from the stored JSON the first time it is asked for)."""
        if self.parsed is None:
            self.parsed = encoding.loads(self.raw)
        return self.parsed

    def with_cursor(self) -> bytes:
        """Return the event's JSON with its ``cursor`` added last, as the feed answers it.

        An entry with the type and labels beside it was written compact by orjson (``entry_fields``): the cursor is
        spliced into its bytes. An older entry (written with spaces after the separators) is written again.
        """
        cursor = encode_cursor(self.id)
        if self.compact and self.raw.endswith(b"}") and self.raw != b"{}":
            return self.raw[:-1] + b',"cursor":"' + cursor.encode() + b'"}'
        return encoding.dumps({**self.event(), "cursor": cursor})


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass
class Page:
    """A page of change events (each the event's JSON with its cursor) and the cursor to continue from."""

    events: list[bytes]
    next_cursor: str

    def json(self) -> bytes:
        """Return the page as the feed answers it: ``{"events": [...], "next_cursor": "..."}``."""
        events = b",".join(self.events)
        return b'{"events":[' + events + b'],"next_cursor":' + encoding.dumps(self.next_cursor) + b"}"


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
        keep: Callable[[Entry], bool] | None = None,
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
            events: list[bytes] = []
            scanned = 0
            while True:
                # Read on until the page is full (or the feed ends), so that passed-over events never show as a
                # short page; at most SCAN_LIMIT entries per request, past which the page is answered as it is.
                count = limit - len(events)
                start = f"({position}" if position != START else "-"
                entries: Any = await self._redis.xrange(key, min=start, count=count)
                scanned += len(entries)
                for entry_id, fields in entries:
                    entry = Entry.read(entry_id, fields)
                    position = entry.id
                    if types and not any(fnmatchcase(entry.type, pattern) for pattern in types):
                        continue
                    if keep is not None and not keep(entry):
                        continue
                    events.append(entry.with_cursor())
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
