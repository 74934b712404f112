"""Per-minute counts per tenant, for the console's charts of the last hour.

One small hash per tenant and hour (``Keyspace.activity``), field ``<what>:<minute of the hour>``, expiring two
hours after its hour began: a write adds two commands to work it already does (the store's commit adds one
``count`` to its plan), and a chart reads at most two hashes.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.store.connection import text
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan

HOUR = 3600
KEEP_SECONDS = 2 * HOUR + 60  # the hour itself, the next one (whose chart still shows it), and a margin
ACCEPTED, REJECTED = "accepted", "rejected"


def _place(now: float) -> tuple[int, int]:
    minute = int(now // 60)
    return minute * 60 // HOUR, minute % 60


def count(plan: Plan, keys: Keyspace, tenant: str, what: str, n: int, now: float) -> None:
    """Add to ``plan`` ``n`` more ``what`` in the minute of ``now``."""
    if n <= 0:
        return
    hour, minute = _place(now)
    key = keys.activity(tenant, hour)
    plan.write("HINCRBY", key, f"{what}:{minute}", n)
    plan.write("EXPIRE", key, KEEP_SECONDS)


async def add(redis: Redis, keys: Keyspace, tenant: str, what: str, n: int, now: float) -> None:
    """Add ``n`` more ``what`` in the minute of ``now`` (outside a plan)."""
    hour, minute = _place(now)
    key = keys.activity(tenant, hour)
    pipe = redis.pipeline(transaction=True)  # one key: a cluster keeps it in one slot
    pipe.hincrby(key, f"{what}:{minute}", n)
    pipe.expire(key, KEEP_SECONDS)
    await pipe.execute()


async def last_hour(redis: Redis, keys: Keyspace, tenant: str, what: str, now: float) -> list[int]:
    """Return the counts of ``what`` in each of the 60 minutes up to and including the minute of ``now``."""
    current = int(now // 60)
    minutes = [current - 59 + i for i in range(60)]
    hours = sorted({m * 60 // HOUR for m in minutes})
    pipe = redis.pipeline(transaction=False)
    for hour in hours:
        pipe.hgetall(keys.activity(tenant, hour))
    found: dict[tuple[int, int], int] = {}
    for hour, raw in zip(hours, await pipe.execute(), strict=True):
        for field, value in _items(raw):
            name, _, minute = field.rpartition(":")
            if name == what and minute.isdigit():
                found[(hour, int(minute))] = int(value)
    return [found.get((m * 60 // HOUR, m % 60), 0) for m in minutes]


def _items(raw: Any) -> list[tuple[str, str]]:
    return [(text(k), text(v)) for k, v in (raw or {}).items()]
