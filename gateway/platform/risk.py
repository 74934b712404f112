"""Risk flags: raised by the worker with ``risk.flagged``, acknowledged by a person, escalated when nobody does.

When the worker publishes a ``risk.flagged`` event (a PHQ-9 item 9 answered above 0, say) it records a flag under
the event's id, in the same atomic step. ``POST /platform/v1/risk-flags/{id}/acknowledge`` records who
acknowledged it and when. A flag nobody acknowledged within ``GATEWAY_RISK_ESCALATE_SECONDS`` is escalated once:
the worker publishes ``risk.escalated`` (with the record, disclosed as any event is) so that someone else looks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.clock import Clock, instant, system_clock
from gateway.errors import NotFound
from gateway.store import Committer, Plan, PlanConflict, text
from gateway.store.keys import Keyspace


@dataclass(frozen=True)
class Flag:
    """One risk flag and what became of it."""

    id: str
    record_type: str
    record_id: str
    flags: list[str]
    raised_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    escalated_at: float | None = None

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> Flag:
        f = {text(k): text(v) for k, v in raw.items()}
        return cls(
            id=f["id"], record_type=f.get("record_type", ""), record_id=f.get("record_id", ""),
            flags=json.loads(f.get("flags") or "[]"), raised_at=float(f.get("raised_at") or 0),
            acknowledged_at=float(f["acknowledged_at"]) if f.get("acknowledged_at") else None,
            acknowledged_by=f.get("acknowledged_by") or None,
            escalated_at=float(f["escalated_at"]) if f.get("escalated_at") else None,
        )  # fmt: skip

    def view(self) -> dict[str, Any]:
        """Return the flag as the platform API shows it."""
        return {
            "id": self.id, "record_type": self.record_type, "record_id": self.record_id, "flags": self.flags,
            "raised_at": instant(self.raised_at),
            "acknowledged_at": instant(self.acknowledged_at) if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
            "escalated_at": instant(self.escalated_at) if self.escalated_at else None,
        }  # fmt: skip


class RiskFlags:
    """The tenants' risk flags in Redis."""

    def __init__(self, redis: Redis, keys: Keyspace, *, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._committer = Committer(redis)

    def raise_in(
        self, plan: Plan, tenant: str, flag_id: str, record_type: str, record_id: str, flags: list[str]
    ) -> None:
        """Add to ``plan`` a new flag, open until acknowledged or escalated."""
        now = self._clock()
        plan.write(
            "HSET", self._keys.risk_flag(tenant, flag_id), "id", flag_id, "record_type", record_type,
            "record_id", record_id, "flags", json.dumps(flags), "raised_at", repr(now),
        )  # fmt: skip
        plan.write("ZADD", self._keys.risk_open(tenant), repr(now), flag_id)

    async def get(self, tenant: str, flag_id: str) -> Flag:
        """Return the tenant's flag, or raise NotFound."""
        raw: Any = await self._redis.hgetall(self._keys.risk_flag(tenant, flag_id)) if flag_id else {}
        if not raw:
            raise NotFound("no such risk flag", expression="id")
        return Flag.from_hash(raw)

    async def open(self, tenant: str, limit: int = 100, *, skip: int = 0) -> list[Flag]:
        """Return the tenant's flags nobody has acknowledged (nor escalated), oldest first, after the first ``skip``."""
        ids: Any = await self._redis.zrange(self._keys.risk_open(tenant), skip, skip + limit - 1)
        pipe = self._redis.pipeline(transaction=False)
        for flag_id in ids:
            pipe.hgetall(self._keys.risk_flag(tenant, text(flag_id)))
        return [Flag.from_hash(raw) for raw in await pipe.execute() if raw]

    async def acknowledge(self, tenant: str, flag_id: str, by: str) -> Flag:
        """Record that ``by`` acknowledged the flag now; acknowledging it again changes nothing."""
        for _ in range(3):
            flag = await self.get(tenant, flag_id)
            if flag.acknowledged_at is not None:
                return flag
            key = self._keys.risk_flag(tenant, flag_id)
            plan = Plan()
            plan.expect_field(key, "acknowledged_at", None)
            plan.write("HSET", key, "acknowledged_at", repr(self._clock()), "acknowledged_by", by)
            plan.write("ZREM", self._keys.risk_open(tenant), flag_id)
            plan.write("ZREM", self._keys.risk_escalated(tenant), flag_id)
            try:
                await self._committer.commit(plan)
            except PlanConflict:
                continue
            return await self.get(tenant, flag_id)
        return await self.get(tenant, flag_id)

    async def due(self, tenant: str, after_seconds: float, limit: int = 100) -> list[Flag]:
        """Return open flags raised more than ``after_seconds`` ago."""
        ids: Any = await self._redis.zrangebyscore(
            self._keys.risk_open(tenant), "-inf", repr(self._clock() - after_seconds), start=0, num=limit
        )
        flags = []
        for flag_id in ids:
            try:
                flags.append(await self.get(tenant, text(flag_id)))
            except NotFound:
                await self._redis.zrem(self._keys.risk_open(tenant), flag_id)  # its hash is gone: nothing to do
        return flags

    def escalate_in(self, plan: Plan, tenant: str, flag: Flag) -> None:
        """Add to ``plan`` the escalation of ``flag``, unless someone acknowledged it meanwhile."""
        key = self._keys.risk_flag(tenant, flag.id)
        plan.expect_field(key, "acknowledged_at", None)
        plan.expect_field(key, "escalated_at", None)
        plan.write("HSET", key, "escalated_at", repr(self._clock()))
        plan.write("ZREM", self._keys.risk_open(tenant), flag.id)
        plan.write("ZADD", self._keys.risk_escalated(tenant), repr(flag.raised_at), flag.id)

    async def unacknowledged(self, tenant: str) -> int:
        """Return how many of the tenant's flags nobody has acknowledged (escalated ones included)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self._keys.risk_open(tenant))
        pipe.zcard(self._keys.risk_escalated(tenant))
        return sum(int(n) for n in await pipe.execute())
