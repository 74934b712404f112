"""The connectors page: each tenant's EHR connector as Redis and this process know it, and "poll now".

Breaker state, last success and error, counters, cursors, the last poll and the poller holding the tenant come
from Redis (``connectors.read_status``; every process reports there). The next poll is the last one plus the
interval. The token's renewal time is known only for a token this API process holds itself (it fetches one when
it delivers nothing and polls nothing, so often it is not known).

"Poll now" polls the tenant here and at once when no poller holds its lease; otherwise it leaves the flag that the
holding poller looks for every ``connectors.poll.POLL_NOW_SECONDS``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from connectors import read_status
from connectors.poll import POLL_NOW_SECONDS, PollReport
from gateway.console import audit
from gateway.console.sources import Sources
from gateway.store import text

POLL_NOW_TTL = 300  # a poll-now flag no poller picked up is dropped after this long
INLINE_POLL_SECONDS = 20.0  # how long the page waits for a poll it started; the poll goes on after that
_polls: set[asyncio.Task[PollReport | None]] = set()  # polls still running after the page stopped waiting


@dataclass(frozen=True)
class Connector:
    """One tenant's connector as the page shows it."""

    tenant: str
    vendor: str
    base_url: str
    auth: str
    types: list[str]
    interval: float | None
    circuit: str
    circuit_changed: float | None
    last_success: float | None
    last_error: float | None
    last_error_kind: str | None
    counts: dict[str, int]
    cursors: dict[str, str]
    last_poll: float | None
    next_poll: float | None
    poller: str | None
    token_renews_at: float | None
    broken: str | None = None  # why the connector could not be opened (a key that cannot be read)
    poll_requested: bool = False
    # The newest resources the gateway refused while polling (type, id, status, error class: no content).
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


async def connectors(sources: Sources, tenants: list[str]) -> list[Connector]:
    """Return the connectors of ``tenants`` (those with an EHR block)."""
    targets = sources.clients.connector_targets()
    found = []
    keys = sources.keys
    for tenant in [t for t in tenants if t in targets]:
        target = targets[tenant]
        status = await read_status(
            sources.redis, tenant, status_key=keys.connector_status(tenant), cursor_key=keys.connector_cursor(tenant),
            lease_key=keys.connector_lease(tenant), dead_key=keys.connector_dead_letters(tenant),
        )  # fmt: skip
        pipe = sources.redis.pipeline(transaction=False)
        pipe.hget(keys.connector_status(tenant), "circuit_changed")
        pipe.exists(keys.connector_poll_now(tenant))
        changed, requested = await pipe.execute()
        client = sources.connectors.get(tenant)
        tokens = client.tokens if client is not None else None
        poll = target.ehr.poll
        interval = poll.interval_seconds if poll else None
        found.append(
            Connector(
                tenant=tenant, vendor=target.vendor, base_url=target.ehr.base_url, auth=target.ehr.auth.type,
                types=list(poll.types) if poll else [], interval=interval, circuit=status.circuit,
                circuit_changed=float(text(changed)) if changed else None, last_success=status.last_success,
                last_error=status.last_error, last_error_kind=status.last_error_kind, counts=status.counts,
                cursors=status.cursors, last_poll=status.last_poll,
                next_poll=status.last_poll + interval if status.last_poll and interval else None,
                poller=status.poller, token_renews_at=tokens.renews_at if tokens is not None else None,
                broken=sources.connectors.broken.get(tenant), poll_requested=bool(requested),
                dead_letters=status.dead_letters,
            )
        )  # fmt: skip
    return found


async def poll_now(sources: Sources, tenant: str, operator: str) -> str:
    """Poll the tenant now, or ask the poller holding it to; return what happened, in a sentence."""
    client = sources.connectors.get(tenant)
    if client is None or client.config.poll is None:
        return f"{tenant} has no EHR connector that polls"
    await audit.record(sources.redis, sources.keys, tenant, audit.fields(sources.clock(), operator, "poll_now", []))
    task = asyncio.create_task(sources.poller(name=f"console-{operator}").poll_once(tenant))
    try:
        report = await asyncio.wait_for(asyncio.shield(task), timeout=INLINE_POLL_SECONDS)
    except TimeoutError:
        _polls.add(task)
        task.add_done_callback(_polls.discard)
        return f"polling {tenant}: still running after {INLINE_POLL_SECONDS:.0f} s; reload the page later"
    if report is None:
        await sources.redis.set(sources.keys.connector_poll_now(tenant), "1", ex=POLL_NOW_TTL)
        return f"a poller holds {tenant}: it polls within {POLL_NOW_SECONDS:.0f} s"
    failed = [f"{s.rtype}: {s.error}" for s in report.sweeps if s.error]
    accepted = sum(s.accepted for s in report.sweeps)
    refused = sum(s.rejected for s in report.sweeps)
    outcome = f"polled {tenant}: {accepted} accepted, {refused} refused"
    return outcome + (f"; failed: {', '.join(failed)}" if failed else "")
