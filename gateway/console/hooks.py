"""The webhooks page: each subscription's delivery (lag, last delivery, failures) and the operator's controls.

Lag is read from the feed after the subscription's cursor: how many events are there (up to ``LAG_SCAN``, events
of other types included, which delivery passes over) and how old the first one is. The receiver is shown as its
scheme, host and port (a URL's path or query could carry a receiver's own secret).

Pause and resume use ``Subscriptions.pause``; "replay from a cursor" moves a paused subscription's cursor back
(``Subscriptions.rewind``), so delivery starts again after that point when it is resumed; dead letters are replayed
with ``Subscriptions.replay``. Each is recorded in the tenant's console audit stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.clock import epoch_of
from gateway.console import audit
from gateway.console.sources import Sources
from gateway.errors import BadRequest
from gateway.platform.feed import decode_cursor, encode_cursor
from gateway.store import text
from gateway.webhooks.subscriptions import Subscription

LAG_SCAN = 1000
_LAST_SEQ = 2**64 - 1


@dataclass(frozen=True)
class Hook:
    """One subscription as the page shows it."""

    tenant: str
    id: str
    receiver: str
    events: list[str]
    status: str  # active, retrying, paused, or pausing (paused while a worker still holds it)
    cursor: str
    behind: int  # feed events after the cursor, up to LAG_SCAN
    behind_capped: bool
    oldest_waiting_at: float | None  # when the first event after the cursor was written
    delivered_at: float | None
    failed_attempts: int
    last_error: str
    next_attempt_at: float | None
    dead_letters: int


def receiver(url: str) -> str:
    """Return a receiver URL's scheme, host and port only."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "?"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


async def hooks(sources: Sources, tenants: list[str]) -> list[Hook]:
    """Return the subscriptions of ``tenants``, oldest first per tenant."""
    found = []
    for tenant in tenants:
        subs = await sources.subscriptions.all(tenant)
        if not subs:
            continue
        dead = await sources.subscriptions.dead_letter_count(tenant, [s.id for s in subs])
        for sub in subs:
            found.append(await _hook(sources, sub, dead[sub.id]))
    return found


async def _hook(sources: Sources, sub: Subscription, dead: int) -> Hook:
    redis, keys = sources.redis, sources.keys
    waiting: Any = await redis.xrange(keys.feed(sub.tenant), min=f"({sub.cursor}", count=LAG_SCAN + 1)
    held = bool(await redis.exists(keys.webhook_lease(sub.tenant, sub.id)))
    retrying = bool(sub.pending)
    status = ("pausing" if held else "paused") if sub.paused else "retrying" if retrying else "active"
    return Hook(
        tenant=sub.tenant, id=sub.id, receiver=receiver(sub.url), events=list(sub.events), status=status,
        cursor=sub.cursor, behind=min(len(waiting), LAG_SCAN), behind_capped=len(waiting) > LAG_SCAN,
        oldest_waiting_at=int(text(waiting[0][0]).split("-")[0]) / 1000 if waiting else None,
        delivered_at=sub.delivered_at or None, failed_attempts=sub.attempt if retrying else 0,
        last_error=sub.last_error if retrying else "",
        next_attempt_at=sub.next_at if retrying and sub.next_at else None, dead_letters=dead,
    )  # fmt: skip


def feed_position(value: str) -> str:
    """Return the feed entry id a "replay from" field names: a feed cursor, a stream id, an instant, or ``start``."""
    value = value.strip()
    if value.lower() in ("start", "0", "beginning"):
        return "0-0"
    if value.count("-") == 1 and value.replace("-", "").isdigit():  # a feed entry id: checked as a cursor is
        return decode_cursor(encode_cursor(value))
    moment = epoch_of(value) if "T" in value or value.count("-") == 2 else None
    if moment is not None:
        ms = int(moment * 1000)
        return f"{ms - 1}-{_LAST_SEQ}" if ms > 0 else "0-0"  # just before the instant: its events are delivered
    try:
        return decode_cursor(value)
    except BadRequest:
        raise BadRequest(
            "give a feed cursor (from /changes), a time such as 2026-01-01T10:00:00Z, or 'start'", expression="cursor"
        ) from None


async def pause(sources: Sources, tenant: str, sid: str, operator: str, paused: bool) -> bool:
    """Pause or resume delivery; record it; False when there is no such subscription."""
    if not await sources.subscriptions.pause(tenant, sid, paused):
        return False
    action = "pause" if paused else "resume"
    await audit.record(sources.redis, sources.keys, tenant, audit.fields(sources.clock(), operator, action, [sid]))
    return True


async def rewind(sources: Sources, tenant: str, sid: str, operator: str, position: str) -> bool:
    """Move a paused subscription's cursor to ``position``; record it; False unless paused and let go."""
    if not await sources.subscriptions.rewind(tenant, sid, position):
        return False
    record = audit.fields(sources.clock(), operator, "rewind", [sid], f"cursor {position}")
    await audit.record(sources.redis, sources.keys, tenant, record)
    return True


async def replay(sources: Sources, tenant: str, sid: str, operator: str) -> list[str]:
    """Queue every dead letter of the subscription for delivery again; record it; return the ids."""
    moved = await sources.subscriptions.replay(tenant, sid, None)
    if moved:
        record = audit.fields(sources.clock(), operator, "replay", moved, f"webhook {sid}")
        await audit.record(sources.redis, sources.keys, tenant, record)
    return moved
