"""The one Redis-Streams work queue: inbound jobs, write-back deliveries and webhook dead letters all use it.

Per tenant, a queue is a stream read through a consumer group, a sorted set of entries waiting to be tried again,
and a dead-letter stream::

    stream --XREADGROUP--> consumer --settle: XACK + XDEL, in the caller's atomic plan--> done
      ^                       | fails
      |                       v
      +--promote_due-- retry set (due time: backoff or Retry-After)
      |                       | after max_attempts
      +------replay----- dead-letter stream (with the error and the original entry id)

An entry is acknowledged and deleted in the same atomic step that applies its effect, so a stream holds exactly
the work not yet done (XLEN is the backlog) and nothing is trimmed past an unacknowledged entry. Entries left
pending by a crashed consumer are reclaimed with XAUTOCLAIM, with the number of times they were handed out, so a
job that kills its worker every time still reaches the dead letters. Every write goes through a ``Plan`` (one Lua
script, all or nothing); moving due retries back and replaying dead letters have one script each, here.

The consumer group is created by the consumers (the worker), never by the edge: a stream that an edge creates by
its first XADD is read from its start when the group appears.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from connectors.retry import backoff
from gateway.clock import Clock, system_clock
from gateway.store.committer import Committer
from gateway.store.connection import Script, text
from gateway.store.plan import Plan

# Move due retries back onto the stream: each member is the JSON object of an entry's fields.
_PROMOTE = """
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local fields = {}
  for name, value in pairs(cjson.decode(member)) do
    fields[#fields + 1] = name
    fields[#fields + 1] = tostring(value)
  end
  redis.call("XADD", KEYS[2], "*", unpack(fields))
  redis.call("ZREM", KEYS[1], member)
end
return #due
"""

# Move dead letters (ARGV[2 .. n+1], n = ARGV[1]) to KEYS[2], without the fields named in ARGV[n+2 ..].
_REPLAY = """
local n = tonumber(ARGV[1])
local drop = {}
for i = n + 2, #ARGV do drop[ARGV[i]] = true end
local moved = {}
for i = 2, n + 1 do
  local entry = redis.call("XRANGE", KEYS[1], ARGV[i], ARGV[i])
  if #entry == 1 then
    local fields, kept = entry[1][2], {}
    for j = 1, #fields, 2 do
      if not drop[fields[j]] then
        kept[#kept + 1] = fields[j]
        kept[#kept + 1] = fields[j + 1]
      end
    end
    redis.call("XADD", KEYS[2], "*", unpack(kept))
    redis.call("XDEL", KEYS[1], ARGV[i])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
"""

# Entry ids per XACK or XDEL of a batch: the commit script unpacks a command's arguments onto Lua's stack.
_IDS_PER_COMMAND = 1000

# What a dead letter records besides the entry's own fields; dropped again when it is replayed.
FAILURE_FIELDS = ("attempt", "error", "original_id", "failed_at")
Fate = Literal["retry", "dead"]


@dataclass
class Entry:
    """One stream entry handed to a consumer."""

    tenant: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int = 1  # times the group handed it out (more than one after a reclaim)

    @property
    def attempt(self) -> int:
        """Return the failed attempts made before this one."""
        value = self.fields.get("attempt", "0")
        return int(value) if value.isdigit() else 0


E = TypeVar("E", bound=Entry)


@dataclass(frozen=True)
class DeadLetter:
    """An entry that failed every attempt."""

    tenant: str
    entry_id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Counts:
    """How much work a tenant's queue holds."""

    queued: int  # in the stream: waiting or in a consumer's hand
    pending: int  # handed out and not yet settled
    retrying: int
    dead: int
    oldest: float | None  # epoch seconds of the oldest entry in the stream

    @property
    def backlog(self) -> int:
        """Return the work not yet done: queued, in hand or waiting to retry."""
        return self.queued + self.retrying


def _fields(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    try:  # the replies of a client without decode_responses: bytes, decoded without a call per item
        return {k.decode(): v.decode() for k, v in raw.items()}
    except AttributeError:
        return {text(k): text(v) for k, v in raw.items()}


class DeadLetters:
    """Dead-letter streams: add in a plan, page through, replay onto another stream."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._replay = Script(redis, _REPLAY)

    @staticmethod
    def add(plan: Plan, key: str, fields: dict[str, Any], *, maxlen: int | None = None) -> None:
        """Add to ``plan`` the dead letter ``fields`` on ``key`` (capped at about ``maxlen`` entries)."""
        cap: list[Any] = ["MAXLEN", "~", maxlen] if maxlen else []
        plan.write("XADD", key, *cap, "*", *[item for pair in fields.items() for item in pair])

    async def page(self, key: str, *, after: str | None = None, limit: int = 1000) -> tuple[list[Any], str | None]:
        """Return ``(entry id, fields)`` pairs after ``after``, oldest first, and the id to continue from."""
        low = _successor(after) if after else "-"
        if low is None:
            return [], None
        entries: Any = await self._redis.xrange(key, min=low, count=limit + 1)
        page = [(text(entry_id), _fields(raw)) for entry_id, raw in entries[:limit]]
        return page, (page[-1][0] if len(entries) > limit else None)

    async def replay(self, key: str, to: str, ids: Sequence[str], *, drop: Sequence[str] = FAILURE_FIELDS) -> list[str]:
        """Move the dead letters ``ids`` from ``key`` onto the stream ``to``; return the ids moved."""
        if not ids:
            return []
        moved = await self._replay(keys=[key, to], args=[len(ids), *ids, *drop])
        return [text(x) for x in moved]


def _successor(entry_id: str) -> str | None:
    """Return the stream id right after ``entry_id``, None after the last possible one."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) < 2**64 - 1:
        return f"{ms}-{int(seq or 0) + 1}"
    return f"{int(ms) + 1}-0" if int(ms) < 2**64 - 1 else None


def is_cluster(redis: Any) -> bool:
    """Tell whether ``redis`` is a Redis Cluster client (whose commands may name keys of one slot only)."""
    return isinstance(redis, RedisCluster)


async def read_streams(
    redis: Redis,
    streams: dict[str, str],
    count: int,
    block_ms: int | None,
    group: str | None = None,
    consumer: str = "",
) -> list[Any]:
    """Read entries after the given ids from several streams (through ``group`` as ``consumer`` when given).

    One command reads them all on a single Redis, blocking up to ``block_ms`` for the first entry (None: not at
    all). A Redis Cluster
    refuses a command naming keys of several slots (every tenant has its own), so there each stream is read on
    its own: one blocking read when there is one stream, else one non-blocking read each, in a pipeline, and a
    pause of at most 50 ms when none had anything.
    """
    if not is_cluster(redis) or len(streams) == 1:
        if group is None:
            return list(await redis.xread(streams, count=count, block=block_ms) or [])  # type: ignore[arg-type]
        reply: Any = await redis.xreadgroup(group, consumer, streams, count=count, block=block_ms)  # type: ignore[arg-type]
        return list(reply or [])
    pipe = redis.pipeline(transaction=False)
    for stream, after in streams.items():
        if group is None:
            pipe.xread({stream: after}, count=count)
        else:
            pipe.xreadgroup(group, consumer, {stream: after}, count=count)
    found = [row for reply in await pipe.execute() for row in reply or []]
    if not found and block_ms:
        await asyncio.sleep(min(block_ms, 50) / 1000)
    return found


@dataclass(frozen=True)
class QueueKeys:
    """Where one queue lives, per tenant."""

    stream: Callable[[str], str]
    retry: Callable[[str], str]
    dead: Callable[[str], str]


class StreamQueue(Generic[E]):
    """Consumer-group access to one queue of every tenant; entries are handed out as ``entry_type``."""

    def __init__(
        self,
        redis: Redis,
        keys: QueueKeys,
        group: str,
        entry_type: type[E],
        *,
        max_attempts: int,
        wait: backoff,
        clock: Clock = system_clock,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.entry_type = entry_type
        self.max_attempts = max_attempts
        self.wait = wait
        self.clock = clock
        self._groups: set[str] = set()
        self._committer = Committer(redis)
        self._promote = Script(redis, _PROMOTE)
        self._letters = DeadLetters(redis)

    # -- consuming ----------------------------------------------------------------------------------------

    async def ensure_group(self, tenant: str) -> None:
        """Create the tenant's stream and consumer group if missing, reading from the stream's start."""
        if tenant in self._groups:
            return
        try:
            await self.redis.xgroup_create(self.keys.stream(tenant), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(tenant)

    async def missing_groups(self, tenants: Sequence[str]) -> list[str]:
        """Return the tenants whose stream has no consumer group (yet)."""
        missing = []
        for tenant in tenants:
            try:
                groups: Any = await self.redis.xinfo_groups(self.keys.stream(tenant))
            except ResponseError:
                groups = []
            if not any(text(g.get("name", b"")) == self.group for g in groups):
                missing.append(tenant)
        return missing

    async def read(self, tenants: Sequence[str], consumer: str, count: int, block_ms: int | None) -> list[E]:
        """Read new entries for ``consumer`` from the tenants' streams (creating their groups first), waiting up to
        ``block_ms`` for the first (None: not waiting)."""
        if not tenants:
            return []
        for tenant in tenants:
            await self.ensure_group(tenant)
        by_stream = {self.keys.stream(t): t for t in tenants}
        try:
            reply = await read_streams(self.redis, dict.fromkeys(by_stream, ">"), count, block_ms, self.group, consumer)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restarted without persistence, or flushed): create it again next time.
            self._groups.clear()
            return []
        return [
            self.entry_type(by_stream[text(stream)], text(entry_id), _fields(raw))
            for stream, entries in reply
            for entry_id, raw in entries
            if raw
        ]

    async def reclaim(self, tenant: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[E]:
        """Claim entries a crashed consumer left pending, with how many times each was handed out."""
        await self.ensure_group(tenant)
        stream = self.keys.stream(tenant)
        reply: Any = await self.redis.xautoclaim(stream, self.group, consumer, min_idle_time=min_idle_ms, count=count)
        entries = [self.entry_type(tenant, text(e[0]), _fields(e[1])) for e in reply[1] if e and e[1]]
        if not entries:
            return []
        pending: Any = await self.redis.xpending_range(
            stream, self.group, min=entries[0].entry_id, max=entries[-1].entry_id, count=len(entries) * 2
        )
        handed = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        for entry in entries:
            entry.deliveries = handed.get(entry.entry_id, 1)
        return entries

    def settle(self, plan: Plan, entry: Entry) -> None:
        """Add to ``plan`` the acknowledgement and deletion of ``entry``."""
        stream = self.keys.stream(entry.tenant)
        plan.write("XACK", stream, self.group, entry.entry_id)
        plan.write("XDEL", stream, entry.entry_id)

    def settle_all(self, plan: Plan, entries: Sequence[Entry]) -> None:
        """Add to ``plan`` the acknowledgement and deletion of ``entries``: one XACK and one XDEL per stream (per
        thousand entries), not two commands per entry."""
        streams: dict[str, str] = {}  # a batch is mostly one tenant's: its stream's key made once
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            stream = streams.get(entry.tenant) or streams.setdefault(entry.tenant, self.keys.stream(entry.tenant))
            by_stream.setdefault(stream, []).append(entry.entry_id)
        for stream, ids in by_stream.items():
            for start in range(0, len(ids), _IDS_PER_COMMAND):
                chunk = ids[start : start + _IDS_PER_COMMAND]
                plan.write("XACK", stream, self.group, *chunk)
                plan.write("XDEL", stream, *chunk)

    def schedule(self, plan: Plan, entry: Entry, error: str, *, retry_after: float | None = None) -> Fate:
        """Add to ``plan`` the end of a failed attempt: settled, then due again later or dead-lettered."""
        self.settle(plan, entry)
        attempts = max(entry.attempt + 1, entry.deliveries)
        now = self.clock()
        failed = {**entry.fields, "attempt": str(attempts), "error": error[:500]}
        if attempts >= self.max_attempts:
            failed |= {"original_id": entry.entry_id, "failed_at": str(int(now))}
            self._letters.add(plan, self.keys.dead(entry.tenant), failed)
            return "dead"
        wait = self.wait.delay(attempts)
        due = now + (max(wait, retry_after) if retry_after is not None else wait)
        plan.write("ZADD", self.keys.retry(entry.tenant), repr(due), json.dumps(failed, sort_keys=True))
        return "retry"

    async def fail(self, entry: Entry, error: str, *, retry_after: float | None = None) -> Fate:
        """Settle a failed entry and schedule its retry, or dead-letter it; return which."""
        plan = Plan()
        fate = self.schedule(plan, entry, error, retry_after=retry_after)
        await self._committer.commit(plan)
        return fate

    async def acknowledge(self, entry: Entry) -> None:
        """Settle an entry that has nothing (more) to do."""
        plan = Plan()
        self.settle(plan, entry)
        await self._committer.commit(plan)

    async def promote_due(self, tenant: str, limit: int = 500) -> int:
        """Move the tenant's due retries back onto its stream; return how many."""
        keys = [self.keys.retry(tenant), self.keys.stream(tenant)]
        return int(await self._promote(keys=keys, args=[repr(self.clock()), limit]))

    # -- operating ----------------------------------------------------------------------------------------

    async def counts(self, tenant: str) -> Counts:
        """Return the tenant's queue figures."""
        stream = self.keys.stream(tenant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.zcard(self.keys.retry(tenant))
        pipe.xlen(self.keys.dead(tenant))
        pipe.xrange(stream, count=1)
        queued, retrying, dead, first = await pipe.execute()
        try:
            summary: Any = await self.redis.xpending(stream, self.group)
            pending = int(summary.get("pending", 0))
        except ResponseError:
            pending = 0
        oldest = int(text(first[0][0]).split("-")[0]) / 1000 if first else None
        return Counts(int(queued), pending, int(retrying), int(dead), oldest)

    async def backlog(self, tenant: str) -> int:
        """Return the work not yet done: queued, in hand and waiting to retry."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.stream(tenant))
        pipe.zcard(self.keys.retry(tenant))
        queued, retrying = await pipe.execute()
        return int(queued) + int(retrying)

    async def dead_letters(self, tenant: str, count: int = 1000) -> list[DeadLetter]:
        """Return the tenant's dead letters, oldest first."""
        page, _ = await self._letters.page(self.keys.dead(tenant), limit=count)
        return [DeadLetter(tenant, entry_id, fields) for entry_id, fields in page]

    async def replay(self, tenant: str, entry_ids: Sequence[str]) -> list[str]:
        """Put dead letters back on the stream with fresh attempts; return the ids moved."""
        return await self._letters.replay(self.keys.dead(tenant), self.keys.stream(tenant), entry_ids)
