"""The outbound (write-back) queue as the connectors consume it: ``gw:{t}:outbound``, group ``connectors``.

The write-back API creates a write-back as one atomic step (its state hash with status ``queued`` and a job
``{writeback_id, kind, attempt}`` on the tenant's outbound stream). Here a delivery reads the job through the
consumer group and, in one more atomic step (``settle``), records the outcome in the state hash and acknowledges
and deletes the entry, and when the failure was transient also schedules the job again on
``gw:{t}:outbound:retry`` (exponential backoff with jitter, or the EHR's ``Retry-After``), or after
``max_attempts`` moves it to ``gw:{t}:outbound:dlq``. Jobs left pending by a crashed worker are reclaimed with
XAUTOCLAIM. A write-back already delivered or failed is never overwritten: a job delivered twice (a reclaim racing
a slow delivery) is only acknowledged.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import ResponseError

GROUP = "connectors"
FINAL = frozenset({"delivered", "failed", "dead_lettered"})

# Record an outcome, acknowledge the job and, for a retry or a dead letter, put the job where it goes next.
_SETTLE = """
redis.call("XACK", KEYS[1], ARGV[1], ARGV[2])
redis.call("XDEL", KEYS[1], ARGV[2])
local status = redis.call("HGET", KEYS[2], "status")
if not status then return "missing" end
if status == "delivered" or status == "failed" or status == "dead_lettered" then return "settled" end
if #ARGV > 5 then
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call("HSET", KEYS[2], unpack(fields))
end
if ARGV[3] == "retry" then
  redis.call("ZADD", KEYS[3], ARGV[4], ARGV[5])
elseif ARGV[3] == "dead" then
  local job = cjson.decode(ARGV[5])
  redis.call("XADD", KEYS[4], "*", "writeback_id", job.writeback_id, "kind", job.kind, "attempt", job.attempt,
             "error", job.error, "original_id", ARGV[2], "failed_at", job.failed_at)
end
return "ok"
"""

# Mark a write-back as being delivered, unless it is gone or already settled.
_START = """
local status = redis.call("HGET", KEYS[1], "status")
if not status then return "missing" end
if status == "delivered" or status == "failed" or status == "dead_lettered" then return status end
redis.call("HSET", KEYS[1], "status", "delivering", "updated_at", ARGV[1], "attempts", ARGV[2])
return "delivering"
"""

# Move due retries back onto the outbound stream, atomically.
_PROMOTE = """
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local job = cjson.decode(member)
  redis.call("XADD", KEYS[2], "*", "writeback_id", job.writeback_id, "kind", job.kind, "attempt", job.attempt)
  redis.call("ZREM", KEYS[1], member)
end
return #due
"""


class OutboundKeys(Protocol):
    """The keys of the outbound queue (``gateway.store.keys.Keyspace`` has them)."""

    def outbound(self, tenant: str) -> str: ...

    def outbound_retry(self, tenant: str) -> str: ...

    def outbound_dead_letters(self, tenant: str) -> str: ...

    def writeback(self, tenant: str, wid: str) -> str: ...


@dataclass
class OutboundJob:
    """One delivery to make."""

    tenant: str
    entry_id: str
    writeback_id: str
    kind: str
    attempt: int  # attempts made before this one
    deliveries: int = 1  # times the stream handed this entry out (a reclaim makes it more than one)

    def as_member(self, attempt: int) -> str:
        return json.dumps({"writeback_id": self.writeback_id, "kind": self.kind, "attempt": attempt}, sort_keys=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def instant(epoch: float) -> str:
    """Return an ISO UTC instant with milliseconds and a Z, as the write-back state keeps times."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{whole}.{int(epoch * 1000) % 1000:03d}Z"


Settle = Literal["done", "retry", "dead"]


class OutboundQueue:
    """Consumer-group access to the tenants' outbound streams."""

    def __init__(
        self,
        redis: Redis,
        keys: OutboundKeys,
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.max_attempts = max_attempts
        self._base = backoff_base
        self._cap = backoff_max
        self._clock = clock
        self._settle = redis.register_script(_SETTLE)
        self._start = redis.register_script(_START)
        self._promote = redis.register_script(_PROMOTE)
        self._groups: set[str] = set()

    async def ensure_group(self, tenant: str) -> None:
        """Create the tenant's outbound stream and its ``connectors`` group if missing (reading from the start)."""
        if tenant in self._groups:
            return
        try:
            await self._redis.xgroup_create(self._keys.outbound(tenant), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(tenant)

    async def read(self, tenants: list[str], consumer: str, count: int, block_ms: int) -> list[OutboundJob]:
        """Read new jobs for ``consumer`` from the tenants' streams."""
        if not tenants:
            return []
        streams: Any = {self._keys.outbound(t): ">" for t in tenants}
        try:
            reply = await self._redis.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.clear()  # the group was lost (a flushed Redis): create it again next time
            return []
        by_stream = {self._keys.outbound(t): t for t in tenants}
        jobs = []
        rows: list[Any] = list(reply or [])
        for stream, entries in rows:
            tenant = by_stream[_text(stream)]
            for entry_id, fields in entries:
                if fields:
                    jobs.append(self._job(tenant, _text(entry_id), _fields(fields)))
        return jobs

    @staticmethod
    def _job(tenant: str, entry_id: str, fields: dict[str, str]) -> OutboundJob:
        attempt = fields.get("attempt", "0")
        return OutboundJob(
            tenant, entry_id, fields.get("writeback_id", ""), fields.get("kind", ""),
            int(attempt) if attempt.isdigit() else 0,
        )  # fmt: skip

    async def reclaim(self, tenant: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[OutboundJob]:
        """Claim jobs a crashed consumer left pending, with how many times each was handed out."""
        stream = self._keys.outbound(tenant)
        reply = await self._redis.xautoclaim(stream, GROUP, consumer, min_idle_time=min_idle_ms, count=count)
        entries = [(_text(e[0]), _fields(e[1])) for e in reply[1] if e and e[1]]
        if not entries:
            return []
        jobs = [self._job(tenant, entry_id, fields) for entry_id, fields in entries]
        pending = await self._redis.xpending_range(
            stream, GROUP, min=jobs[0].entry_id, max=jobs[-1].entry_id, count=len(jobs) * 2
        )
        delivered = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        for job in jobs:
            job.deliveries = delivered.get(job.entry_id, 1)
        return jobs

    async def promote_due(self, tenant: str, limit: int = 500) -> int:
        """Move the tenant's due retries back to its outbound stream; return how many."""
        keys = [self._keys.outbound_retry(tenant), self._keys.outbound(tenant)]
        return int(await self._promote(keys=keys, args=[self._clock(), limit]))

    async def state(self, job: OutboundJob) -> dict[str, str]:
        """Return the write-back's state hash (empty when it is gone)."""
        return _fields(await self._redis.hgetall(self._keys.writeback(job.tenant, job.writeback_id)))

    async def start(self, job: OutboundJob) -> str:
        """Mark the write-back as being delivered; return "delivering", or why not ("missing", a final status)."""
        key = self._keys.writeback(job.tenant, job.writeback_id)
        return _text(await self._start(keys=[key], args=[instant(self._clock()), job.attempt + 1]))

    def backoff(self, attempt: int) -> float:
        """Return the delay before retry number ``attempt`` (exponential, capped, with jitter)."""
        ceiling = min(self._cap, self._base * (2 ** max(attempt - 1, 0)))
        return random.uniform(ceiling / 2, ceiling)

    async def settle(
        self, job: OutboundJob, fields: dict[str, str], then: Settle, *, retry_after: float | None = None
    ) -> tuple[str, Settle]:
        """Record ``fields`` and acknowledge the job atomically; for a retry, schedule it or dead-letter it.

        Return the script's answer ("ok", "missing", "settled") and what became of the job.
        """
        now = self._clock()
        attempts = job.attempt + 1
        if then == "retry" and max(attempts, job.deliveries) >= self.max_attempts:
            then = "dead"
        fields = {**fields, "updated_at": instant(now)}
        member, due = "", 0.0
        if then == "retry":
            fields["status"] = "queued"
            wait = self.backoff(attempts)
            due = now + (max(wait, retry_after) if retry_after is not None else wait)
            member = job.as_member(attempts)
        elif then == "dead":
            fields["status"] = "dead_lettered"
            member = json.dumps({
                "writeback_id": job.writeback_id, "kind": job.kind, "attempt": attempts,
                "error": fields.get("error", "")[:500], "failed_at": int(now),
            })  # fmt: skip
        t = job.tenant
        keys = [self._keys.outbound(t), self._keys.writeback(t, job.writeback_id),
                self._keys.outbound_retry(t), self._keys.outbound_dead_letters(t)]  # fmt: skip
        flat = [item for pair in fields.items() for item in pair]
        answer = await self._settle(keys=keys, args=[GROUP, job.entry_id, then, due, member, *flat])
        return _text(answer), then

    async def acknowledge(self, job: OutboundJob) -> None:
        """Acknowledge and delete a job that has nothing (more) to deliver."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.xack(self._keys.outbound(job.tenant), GROUP, job.entry_id)
        pipe.xdel(self._keys.outbound(job.tenant), job.entry_id)
        await pipe.execute()
