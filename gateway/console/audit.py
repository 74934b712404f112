"""What operators did at the console, per tenant, in a capped Redis stream (``Keyspace.console_audit``).

Every action that changes something (replay, discard, poll now, pause, resume, rewind) is recorded with the
operator's client name, the ids it touched and, for a discard, the operator's reason. Ids only, never data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.store import Keyspace, Plan, text

MAXLEN = 10_000
MAX_TARGETS = 50  # ids kept in one record; the count says how many there were


@dataclass(frozen=True)
class Action:
    """One recorded operator action."""

    at: float
    operator: str
    action: str
    target: str
    count: int
    reason: str


def fields(at: float, operator: str, action: str, targets: list[str], reason: str = "") -> dict[str, str]:
    """Return the stream fields of one action."""
    shown = targets[:MAX_TARGETS]
    more = f" (+{len(targets) - len(shown)} more)" if len(targets) > len(shown) else ""
    return {
        "at": repr(at),
        "operator": operator,
        "action": action,
        "target": " ".join(shown) + more,
        "count": str(len(targets)),
        "reason": reason[:500],
    }


def add(plan: Plan, keys: Keyspace, tenant: str, record: dict[str, str]) -> None:
    """Add to ``plan`` the recording of an action (so it is written with the action's own writes)."""
    plan.write(
        "XADD", keys.console_audit(tenant), "MAXLEN", "~", MAXLEN, "*", *[x for kv in record.items() for x in kv]
    )


async def record(redis: Redis, keys: Keyspace, tenant: str, entry: dict[str, str]) -> None:
    """Record an action done by other means (a replay script, a poll)."""
    await redis.xadd(keys.console_audit(tenant), entry, maxlen=MAXLEN, approximate=True)  # type: ignore[arg-type]


async def recent(redis: Redis, keys: Keyspace, tenant: str, count: int = 20) -> list[Action]:
    """Return the tenant's latest actions, newest first."""
    entries: Any = await redis.xrevrange(keys.console_audit(tenant), count=count)
    actions = []
    for _, raw in entries:
        f = {text(k): text(v) for k, v in raw.items()}
        actions.append(
            Action(
                at=float(f.get("at") or 0), operator=f.get("operator", ""), action=f.get("action", ""),
                target=f.get("target", ""), count=int(f.get("count") or 0), reason=f.get("reason", ""),
            )
        )  # fmt: skip
    return actions
