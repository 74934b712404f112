"""The inbound work queue on Redis Streams: consumer group reads, retries with backoff, reclaim, dead letters.

A job is a stream entry ``{type, id, vid, op, attempt}`` naming a stored resource version. A worker acknowledges
and deletes the entry in the same atomic step that applies its effect, so the stream holds exactly the jobs not
yet done (XLEN is the backlog) and nothing is ever trimmed past an unacknowledged entry. A failed job moves, in
one step, to the retry set with a due time (exponential backoff), or to the dead-letter stream after
``max_attempts``. Jobs left pending by a crashed worker are reclaimed with XAUTOCLAIM after an idle time.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.store.keys import GROUP, Keyspace, tenant_of
from gateway.store.plan import Committer, Plan

# Move due retries back onto the inbound stream, atomically, so two workers never both re-queue one job.
_PROMOTE = """
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local job = cjson.decode(member)
  redis.call("XADD", KEYS[2], "*", "type", job.type, "id", job.id, "vid", job.vid, "op", job.op,
             "attempt", job.attempt, "first_id", job.first_id, "error", job.error or "")
  redis.call("ZREM", KEYS[1], member)
end
return #due
"""

# Put dead letters back on the inbound stream with a fresh attempt count.
_REPLAY = """
local moved = {}
for i = 1, #ARGV do
  local entry = redis.call("XRANGE", KEYS[1], ARGV[i], ARGV[i])
  if #entry == 1 then
    local fields = entry[1][2]
    local job = {}
    for j = 1, #fields, 2 do job[fields[j]] = fields[j + 1] end
    redis.call("XADD", KEYS[2], "*", "type", job.type, "id", job.id, "vid", job.vid, "op", job.op,
               "attempt", 0, "first_id", job.first_id or ARGV[i], "error", "")
    redis.call("XDEL", KEYS[1], ARGV[i])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
"""


@dataclass
class Job:
    """One unit of inbound work."""

    tenant: str
    entry_id: str
    rtype: str
    rid: str
    vid: int
    op: str
    attempt: int
    first_id: str
    deliveries: int = 1

    @classmethod
    def from_entry(cls, stream: str, entry_id: str, fields: dict[str, str]) -> Job:
        return cls(
            tenant=tenant_of(stream),
            entry_id=entry_id,
            rtype=fields["type"],
            rid=fields["id"],
            vid=int(fields["vid"]),
            op=fields.get("op", "upsert"),
            attempt=int(fields.get("attempt", 0)),
            first_id=fields.get("first_id") or entry_id,
        )

    def as_fields(self) -> dict[str, Any]:
        return {
            "type": self.rtype, "id": self.rid, "vid": self.vid, "op": self.op,
            "attempt": self.attempt, "first_id": self.first_id,
        }  # fmt: skip


@dataclass
class QueueStats:
    """How much work a tenant's queue holds."""

    backlog: int  # queued, in hand or waiting to retry
    pending: int  # delivered and not yet done
    retrying: int
    dead: int
    oldest: float | None  # epoch seconds of the oldest job not yet done


@dataclass
class DeadLetter:
    """A job that failed every attempt."""

    tenant: str
    entry_id: str
    fields: dict[str, str]


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    return value


class WorkQueue:
    """Consumer-group access to every tenant's inbound stream."""

    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        *,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._committer = Committer(redis)
        self._promote = redis.register_script(_PROMOTE)
        self._replay = redis.register_script(_REPLAY)
        self.max_attempts = max_attempts
        self._base = retry_base_seconds
        self._cap = retry_max_seconds
        self._groups: set[str] = set()

    async def ensure_group(self, tenant: str) -> None:
        """Create the tenant's inbound stream and consumer group if missing (reading from the start)."""
        if tenant in self._groups:
            return
        await self._redis.sadd(self._keys.tenants, tenant)
        try:
            await self._redis.xgroup_create(self._keys.inbound(tenant), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(tenant)

    async def known_tenants(self) -> list[str]:
        """Return every tenant that has written, without touching their groups."""
        return sorted(_decode(m) for m in await self._redis.smembers(self._keys.tenants))

    async def missing_groups(self, tenants: list[str]) -> list[str]:
        """Return the tenants whose inbound stream has no consumer group."""
        missing = []
        for tenant in tenants:
            try:
                groups = _decode(await self._redis.xinfo_groups(self._keys.inbound(tenant)))
            except ResponseError:
                groups = []
            if not any(g.get("name") == GROUP for g in groups):
                missing.append(tenant)
        return missing

    async def stats(self, tenant: str) -> QueueStats:
        """Return the tenant's queue figures."""
        inbound = self._keys.inbound(tenant)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(inbound)
        pipe.zcard(self._keys.retry(tenant))
        pipe.xlen(self._keys.dead_letters(tenant))
        pipe.xrange(inbound, count=1)
        queued, retrying, dead, first = await pipe.execute()
        try:
            summary = _decode(await self._redis.xpending(inbound, GROUP))
            pending = int(summary.get("pending", 0))
        except ResponseError:
            pending = 0
        oldest = int(_decode(first[0][0]).split("-")[0]) / 1000 if first else None
        return QueueStats(int(queued) + int(retrying), pending, int(retrying), int(dead), oldest)

    async def tenants(self) -> list[str]:
        """Return every tenant that has written, with its group ensured."""
        names = sorted(_decode(m) for m in await self._redis.smembers(self._keys.tenants))
        for name in names:
            await self.ensure_group(name)
        return names

    async def read(self, tenants: list[str], consumer: str, count: int, block_ms: int) -> list[Job]:
        """Read new jobs for ``consumer`` from every tenant's stream."""
        if not tenants:
            return []
        streams: Any = {self._keys.inbound(t): ">" for t in tenants}
        try:
            reply = await self._redis.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restarted without persistence, or flushed): create it again next time.
            self._groups.clear()
            return []
        jobs = []
        for stream, entries in _decode(reply or []):
            for entry_id, fields in entries:
                if fields:
                    jobs.append(Job.from_entry(stream, entry_id, fields))
        return jobs

    async def reclaim(self, tenant: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[Job]:
        """Claim jobs left pending by a crashed consumer; return them with their delivery counts."""
        stream = self._keys.inbound(tenant)
        reply = _decode(await self._redis.xautoclaim(stream, GROUP, consumer, min_idle_time=min_idle_ms, count=count))
        entries = [e for e in reply[1] if e and e[1]]
        if not entries:
            return []
        jobs = [Job.from_entry(stream, entry_id, fields) for entry_id, fields in entries]
        pending = _decode(
            await self._redis.xpending_range(
                stream, GROUP, min=jobs[0].entry_id, max=jobs[-1].entry_id, count=len(jobs) * 2
            )
        )
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        for job in jobs:
            job.deliveries = delivered.get(job.entry_id, 1)
        return jobs

    def acknowledge(self, plan: Plan, job: Job) -> None:
        """Add to ``plan`` the acknowledgement and deletion of ``job``."""
        stream = self._keys.inbound(job.tenant)
        plan.write("XACK", stream, GROUP, job.entry_id)
        plan.write("XDEL", stream, job.entry_id)

    def backoff(self, attempt: int) -> float:
        """Return the delay before retry number ``attempt`` (exponential, capped, with full jitter)."""
        ceiling = min(self._cap, self._base * (2 ** max(attempt - 1, 0)))
        return random.uniform(ceiling / 2, ceiling)

    async def fail(self, job: Job, error: str) -> str:
        """Schedule ``job`` again after a backoff, or dead-letter it; return "retry" or "dead"."""
        plan = Plan()
        self.acknowledge(plan, job)
        attempts = max(job.attempt + 1, job.deliveries)
        if attempts >= self.max_attempts:
            plan.write(
                "XADD", self._keys.dead_letters(job.tenant), "*",
                *self._flat({**job.as_fields(), "attempt": attempts, "error": error[:500],
                             "original_id": job.entry_id, "failed_at": int(time.time())}),
            )  # fmt: skip
            await self._committer.commit(plan)
            return "dead"
        member = json.dumps({**job.as_fields(), "attempt": attempts, "error": error[:500]}, sort_keys=True)
        plan.write("ZADD", self._keys.retry(job.tenant), time.time() + self.backoff(attempts), member)
        await self._committer.commit(plan)
        return "retry"

    async def promote_due(self, tenant: str, limit: int = 500) -> int:
        """Move due retries of ``tenant`` back to its inbound stream; return how many."""
        keys = [self._keys.retry(tenant), self._keys.inbound(tenant)]
        return int(await self._promote(keys=keys, args=[time.time(), limit]))

    async def backlog(self, tenant: str) -> int:
        """Return the jobs not yet done: queued, in hand and waiting to retry."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(self._keys.inbound(tenant))
        pipe.zcard(self._keys.retry(tenant))
        queued, retrying = await pipe.execute()
        return int(queued) + int(retrying)

    async def dead_letters(self, tenant: str, count: int = 1000) -> list[DeadLetter]:
        """Return the tenant's dead letters, oldest first."""
        entries = _decode(await self._redis.xrange(self._keys.dead_letters(tenant), count=count))
        return [DeadLetter(tenant, entry_id, fields) for entry_id, fields in entries]

    async def replay(self, tenant: str, entry_ids: list[str]) -> list[str]:
        """Put dead letters back on the inbound stream; return the ids moved."""
        await self.ensure_group(tenant)
        keys = [self._keys.dead_letters(tenant), self._keys.inbound(tenant)]
        return [str(x) for x in _decode(await self._replay(keys=keys, args=entry_ids))]

    @staticmethod
    def _flat(fields: dict[str, Any]) -> list[Any]:
        return [item for pair in fields.items() for item in pair]
