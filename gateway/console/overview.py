"""The overview page's figures per tenant: intake, backlog, workers, dead letters, the feed, risk flags, charts.

Everything is read from Redis at request time, cheaply: queue counts, one XINFO, the feed's head, the last
hour's per-minute counts (``gateway.store.activity``) and the dead-letter stream's ids (its entry ids are the
times the jobs failed), and the risk flags nobody has acknowledged (``gateway.platform.risk``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from redis.exceptions import ResponseError

from gateway.console.charts import minute_bars
from gateway.console.sources import Sources
from gateway.store import activity, text

ACTIVE_WORKER_SECONDS = 60.0  # a consumer that read within this long counts as a live worker


@dataclass(frozen=True)
class TenantOverview:
    """One tenant's figures."""

    tenant: str
    accepted_last_minute: int
    accepted_last_hour: int
    backlog: int
    pending: int
    retrying: int
    oldest_age: float | None  # seconds since the oldest job not yet done was queued
    workers: int
    dead_letters: int
    feed_length: int
    feed_head: str | None  # the newest event's id
    feed_head_at: float | None
    risk_flags_unacknowledged: int
    charts: list[Markup]


async def tenant_overview(sources: Sources, tenant: str) -> TenantOverview:
    """Return the tenant's figures now."""
    now = sources.clock()
    redis, keys = sources.redis, sources.keys
    counts = await sources.inbound.counts(tenant)
    accepted = await activity.last_hour(redis, keys, tenant, activity.ACCEPTED, now)
    rejected = await activity.last_hour(redis, keys, tenant, activity.REJECTED, now)
    dead = await _dead_per_minute(sources, tenant, now)
    head: Any = await redis.xrevrange(keys.feed(tenant), count=1)
    head_id = text(head[0][0]) if head else None
    return TenantOverview(
        tenant=tenant,
        accepted_last_minute=accepted[-2] if len(accepted) > 1 else 0,  # the last complete minute
        accepted_last_hour=sum(accepted),
        backlog=counts.backlog,
        pending=counts.pending,
        retrying=counts.retrying,
        oldest_age=max(now - counts.oldest, 0.0) if counts.oldest else None,
        workers=await _workers(sources, tenant),
        dead_letters=counts.dead,
        feed_length=int(await redis.xlen(keys.feed(tenant))),
        feed_head=head_id,
        feed_head_at=_id_time(head_id) if head_id else None,
        risk_flags_unacknowledged=await sources.risks.unacknowledged(tenant),
        charts=[
            minute_bars("Resources accepted", accepted),
            minute_bars("Resources refused as invalid", rejected),
            minute_bars("Jobs dead-lettered", dead),
        ],
    )


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-")[0]) / 1000


async def _workers(sources: Sources, tenant: str) -> int:
    """Count the consumers of the tenant's inbound group that read within ``ACTIVE_WORKER_SECONDS``."""
    try:
        consumers: Any = await sources.redis.xinfo_consumers(sources.keys.inbound(tenant), sources.inbound.group)
    except ResponseError:  # no stream or no group yet: no worker has started on the tenant
        return 0
    return sum(1 for c in consumers if int(c.get("idle", 0)) < ACTIVE_WORKER_SECONDS * 1000)


async def _dead_per_minute(sources: Sources, tenant: str, now: float) -> list[int]:
    """Count the jobs dead-lettered in each minute of the last hour, from the dead-letter stream's ids."""
    current = int(now // 60)
    start_ms = (current - 59) * 60_000
    entries: Any = await sources.redis.xrange(sources.keys.dead_letters(tenant), min=str(start_ms), count=10_000)
    per = [0] * 60
    for entry_id, _ in entries:
        minute = int(text(entry_id).split("-")[0]) // 60_000 - (current - 59)
        if 0 <= minute < 60:
            per[minute] += 1
    return per
