"""The dead-letters page: inbound jobs that failed every attempt, and the operator's replay and discard.

A row shows ids and times only: the resource type and id, the error's kind (the exception's name; its message
could quote data and stays in ``fhir-gateway dlq list``), attempts, when the gateway accepted that version (first
seen) and when the job failed for the last time (last seen). Replay and discard are recorded in the tenant's
console audit stream; a discard and its record are written in one atomic step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.clock import epoch_of
from gateway.console import audit
from gateway.console.sources import Sources
from gateway.store import Committer, Plan, text

PAGE = 200


@dataclass(frozen=True)
class Row:
    """One dead letter as the page shows it."""

    entry_id: str
    rtype: str
    rid: str
    version: str
    error_kind: str
    attempts: int
    first_seen: float | None
    last_seen: float | None


def error_kind(error: str) -> str:
    """Return the kind of a recorded error: the exception's name before its message, or a short fixed text."""
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "error"


async def rows(sources: Sources, tenant: str) -> tuple[list[Row], int]:
    """Return the tenant's oldest ``PAGE`` dead letters and how many there are."""
    letters = await sources.inbound.dead_letters(tenant, count=PAGE)
    total = int(await sources.redis.xlen(sources.keys.dead_letters(tenant)))
    pipe = sources.redis.pipeline(transaction=False)
    for letter in letters:
        f = letter.fields
        pipe.hget(sources.keys.history(tenant, f.get("type", ""), f.get("id", "")), f.get("vid", "0"))
    accepted = [_accepted_at(raw) for raw in await pipe.execute()] if letters else []
    found = []
    for letter, first in zip(letters, accepted, strict=True):
        f = letter.fields
        failed_at = f.get("failed_at", "")
        found.append(
            Row(
                entry_id=letter.entry_id, rtype=f.get("type", "?"), rid=f.get("id", "?"), version=f.get("vid", ""),
                error_kind=error_kind(f.get("error", "")), attempts=int(f.get("attempt") or 0), first_seen=first,
                last_seen=float(failed_at) if failed_at.isdigit() else None,
            )
        )  # fmt: skip
    return found, total


def _accepted_at(raw: Any) -> float | None:
    """Return when the gateway stored a version (its ``meta.lastUpdated``); None for a tombstone or none."""
    if not raw:
        return None
    try:
        meta = json.loads(text(raw)).get("meta") or {}
    except (ValueError, AttributeError):
        return None
    return epoch_of(meta.get("lastUpdated")) if isinstance(meta, dict) else None


async def replay(sources: Sources, tenant: str, operator: str, ids: list[str] | None) -> list[str]:
    """Put dead letters (all when ``ids`` is None) back on the queue; record it; return the ids moved."""
    if ids is None:
        # All that are there now: a replayed job that fails again comes back with a newer id and is left.
        newest: Any = await sources.redis.xrevrange(sources.keys.dead_letters(tenant), count=1)
        last = _id_tuple(text(newest[0][0])) if newest else (0, 0)
        moved: list[str] = []
        while True:
            letters = await sources.inbound.dead_letters(tenant, count=1000)
            wanted = [d.entry_id for d in letters if _id_tuple(d.entry_id) <= last]
            done = await sources.inbound.replay(tenant, wanted)
            moved += done
            if not done:
                break
        action = "replay_all"
    else:
        moved = await sources.inbound.replay(tenant, ids)
        action = "replay"
    if moved:
        await audit.record(sources.redis, sources.keys, tenant, audit.fields(sources.clock(), operator, action, moved))
    return moved


async def discard(sources: Sources, tenant: str, operator: str, entry_id: str, reason: str) -> bool:
    """Delete one dead letter for good, with the operator's reason in the audit record; False if it is gone."""
    key = sources.keys.dead_letters(tenant)
    if not await sources.redis.xrange(key, min=entry_id, max=entry_id):
        return False
    plan = Plan()
    plan.write("XDEL", key, entry_id)
    audit.add(plan, sources.keys, tenant, audit.fields(sources.clock(), operator, "discard", [entry_id], reason))
    await Committer(sources.redis).commit(plan)
    return True


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
