"""The outbound (write-back) queue: ``gw:{t}:outbound``, consumer group ``connectors``, on ``gateway.work.streams``.

The write-back API creates a write-back in one atomic step (its state hash with status ``queued`` and a job
``{writeback_id, kind, attempt}`` on the tenant's outbound stream). The connectors' ``Delivery`` reads the job
through this queue, marks the write-back ``delivering`` (``start``) and, in one more atomic step (``settle``),
records the outcome in the state hash and settles the job; a transient failure schedules it again (backoff, or the
EHR's ``Retry-After``) or, after ``max_attempts``, dead-letters it. A write-back already delivered or failed is
never overwritten: a job handed out twice (a reclaim racing a slow delivery) is only acknowledged.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from connectors.delivery import Settle
from connectors.retry import backoff
from gateway.clock import Clock, instant, system_clock
from gateway.store.committer import Committer
from gateway.store.connection import Script, text
from gateway.store.keys import OUTBOUND_GROUP, Keyspace
from gateway.store.plan import Plan, PlanConflict
from gateway.work.streams import Entry, QueueKeys, StreamQueue

FINAL = ("delivered", "failed", "dead_lettered")

# Mark a write-back as being delivered, unless it is gone or already settled.
_START = """
local status = redis.call("HGET", KEYS[1], "status")
if not status then return "missing" end
if status == "delivered" or status == "failed" or status == "dead_lettered" then return status end
redis.call("HSET", KEYS[1], "status", "delivering", "updated_at", ARGV[1], "attempts", ARGV[2])
return "delivering"
"""


class OutboundJob(Entry):
    """One delivery to make: write-back ``writeback_id``."""

    @property
    def writeback_id(self) -> str:
        return self.fields.get("writeback_id", "")

    @property
    def kind(self) -> str:
        return self.fields.get("kind", "")


class OutboundQueue(StreamQueue[OutboundJob]):
    """The tenants' outbound streams, with the write-back state each job's outcome is recorded in."""

    def __init__(
        self, redis: Redis, keys: Keyspace, *, max_attempts: int, wait: backoff, clock: Clock = system_clock
    ) -> None:
        where = QueueKeys(stream=keys.outbound, retry=keys.outbound_retry, dead=keys.outbound_dead_letters)
        super().__init__(redis, where, OUTBOUND_GROUP, OutboundJob, max_attempts=max_attempts, wait=wait, clock=clock)
        self._state_key = keys.writeback
        self._start = Script(redis, _START)
        self._commit = Committer(redis).commit

    async def state(self, job: OutboundJob) -> dict[str, str]:
        """Return the write-back's state hash (empty when it is gone)."""
        raw: Any = await self.redis.hgetall(self._state_key(job.tenant, job.writeback_id))
        return {text(k): text(v) for k, v in raw.items()}

    async def start(self, job: OutboundJob) -> str:
        """Mark the write-back as being delivered; return "delivering", or why not ("missing", a final status)."""
        key = self._state_key(job.tenant, job.writeback_id)
        return text(await self._start(keys=[key], args=[instant(self.clock()), job.attempt + 1]))

    async def record(
        self, job: OutboundJob, fields: dict[str, str], then: Settle, *, retry_after: float | None = None
    ) -> tuple[str, Settle]:
        """Record ``fields`` and settle the job atomically; for a retry, schedule it or dead-letter it.

        Return "ok", or "settled" when the write-back is gone or already settled (by another delivery of the same
        job): then the job is only acknowledged. Also return what became of the job.
        """
        state_key = self._state_key(job.tenant, job.writeback_id)
        plan = Plan()
        plan.expect_field_not(state_key, "status", [None, *FINAL])
        fields = {**fields, "updated_at": instant(self.clock())}
        if then == "done":
            self.settle(plan, job)
        else:
            then = self.schedule(plan, job, fields.get("error", ""), retry_after=retry_after)
            fields["status"] = "queued" if then == "retry" else "dead_lettered"
        plan.write("HSET", state_key, *[item for pair in fields.items() for item in pair])
        try:
            await self._commit(plan)
        except PlanConflict:
            await self.acknowledge(job)
            return "settled", then
        return "ok", then
