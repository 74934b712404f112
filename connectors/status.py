"""What each EHR connector has been doing, kept in Redis so that every process can show it.

A client reports through an ``Observer``: answers, errors (by kind, never a payload), retries, 429s, calls its own
rate limit held back, and circuit changes. ``RedisObserver`` keeps these in the tenant's status hash;
``read_status`` reads them back with the poll cursors for ``fhir-gateway connectors status`` and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("connectors.status")

COUNTERS = ("requests", "retries", "rate_limited", "throttled", "errors", "dead_letters")
RECENT_DEAD_LETTERS = 10  # how many of the newest dead letters the status shows


class Observer:
    """Receive a connector's reports; this one ignores them."""

    async def success(self) -> None:
        """An attempt got a 2xx answer."""

    async def error(self, kind: str) -> None:
        """An attempt failed (``kind`` is the error's kind: transport, transient, rejected...)."""

    async def retry(self) -> None:
        """A request is about to be tried again."""

    async def rate_limited(self) -> None:
        """The EHR answered 429."""

    async def throttled(self) -> None:
        """The connector's own rate limit held a call back."""

    async def circuit(self, state: str) -> None:
        """The circuit breaker moved to ``state``."""


class CountingObserver(Observer):
    """Keep the reports in memory (tests, and the process's own view)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(("success", *COUNTERS), 0)
        self.errors: list[str] = []
        self.circuits: list[str] = []

    async def success(self) -> None:
        self.counts["success"] += 1
        self.counts["requests"] += 1

    async def error(self, kind: str) -> None:
        self.counts["errors"] += 1
        self.counts["requests"] += 1
        self.errors.append(kind)

    async def retry(self) -> None:
        self.counts["retries"] += 1

    async def rate_limited(self) -> None:
        self.counts["rate_limited"] += 1

    async def throttled(self) -> None:
        self.counts["throttled"] += 1

    async def circuit(self, state: str) -> None:
        self.circuits.append(state)


class RedisObserver(Observer):
    """Keep the reports in one Redis hash (a lost report is logged, never raised into the EHR call)."""

    def __init__(self, redis: Redis, key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._key = key
        self._clock = clock

    async def _write(self, *, fields: dict[Any, Any] | None = None, incr: tuple[str, ...] = ()) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            if fields:
                pipe.hset(self._key, mapping=fields)
            for name in incr:
                pipe.hincrby(self._key, name, 1)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("connector status not recorded", extra={"error": type(exc).__name__})

    async def success(self) -> None:
        await self._write(fields={"last_success": self._clock()}, incr=("requests",))

    async def error(self, kind: str) -> None:
        await self._write(fields={"last_error": self._clock(), "last_error_kind": kind}, incr=("requests", "errors"))

    async def retry(self) -> None:
        await self._write(incr=("retries",))

    async def rate_limited(self) -> None:
        await self._write(incr=("rate_limited",))

    async def throttled(self) -> None:
        await self._write(incr=("throttled",))

    async def circuit(self, state: str) -> None:
        await self._write(fields={"circuit": state, "circuit_changed": self._clock()})


@dataclass
class Status:
    """One tenant's connector figures as Redis holds them."""

    tenant: str
    last_success: float | None = None
    last_error: float | None = None
    last_error_kind: str | None = None
    circuit: str = "closed"
    counts: dict[str, int] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    last_poll: float | None = None
    poller: str | None = None
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # the newest, as ``connectors.poll`` keeps them

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready data."""
        return {
            "tenant": self.tenant,
            "last_success": _instant(self.last_success),
            "last_error": _instant(self.last_error),
            "last_error_kind": self.last_error_kind,
            "circuit": self.circuit,
            **{name: self.counts.get(name, 0) for name in COUNTERS},
            "cursors": self.cursors,
            "last_poll": _instant(self.last_poll),
            "poller": self.poller,
            "recent_dead_letters": [{**d, "at": _instant(d.get("at"))} for d in self.dead_letters],
        }


def _instant(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_status(
    redis: Redis, tenant: str, *, status_key: str, cursor_key: str, lease_key: str, dead_key: str | None = None
) -> Status:
    """Read one tenant's connector status, poll cursors, lease holder and newest dead letters."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(status_key)
    pipe.hgetall(cursor_key)
    pipe.get(lease_key)
    if dead_key:
        pipe.lrange(dead_key, 0, RECENT_DEAD_LETTERS - 1)
    raw, cursors, lease, *dead = await pipe.execute()
    values = {_text(k): _text(v) for k, v in raw.items()}
    marks = {_text(k): _text(v) for k, v in cursors.items()}

    def number(name: str) -> float | None:
        try:
            return float(values[name])
        except (KeyError, ValueError):
            return None

    return Status(
        tenant=tenant,
        last_success=number("last_success"),
        last_error=number("last_error"),
        last_error_kind=values.get("last_error_kind"),
        circuit=values.get("circuit", "closed"),
        counts={name: int(values.get(name, "0") or 0) for name in COUNTERS},
        cursors={k: v for k, v in marks.items() if not k.startswith("_")},
        last_poll=float(marks["_last_poll"]) if "_last_poll" in marks else None,
        poller=_text(lease).split("|", 1)[0] if lease else None,
        dead_letters=[_letter(d) for d in (dead[0] if dead else [])],
    )


def _letter(raw: Any) -> dict[str, Any]:
    try:
        letter = json.loads(_text(raw))
    except ValueError:
        return {"error": "unreadable"}
    return letter if isinstance(letter, dict) else {"error": "unreadable"}
