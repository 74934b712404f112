"""The audit trail's buffer, flusher, retention and reader (the entries are described in gateway.store.audit).

A read must not wait for its audit entry: ``record`` appends to an in-process buffer, and ``run`` (a task of the
API's lifespan) flushes it every ``flush_seconds`` in one pipeline of XADDs, or sooner when it fills. An entry that
Redis refused stays in the buffer for the next flush; ``close`` flushes what is left when the process stops, so a
clean shutdown loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.clock import Clock, instant, system_clock
from gateway.store.audit import RequestAudit
from gateway.store.connection import text
from gateway.store.keys import Keyspace

log = logging.getLogger("gateway.audit")
_MAX_BUFFER = 100_000  # past this, with Redis down, the oldest entries are dropped (and counted in the log)


@dataclass(frozen=True)
class Page:
    """A page of audit entries, oldest first, and the cursor of the next (None: the end)."""

    entries: list[dict[str, Any]]
    next_cursor: str | None


class AuditTrail:
    """Record audit entries on each tenant's stream and read them back."""

    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        *,
        retention_days: float,
        clock: Clock = system_clock,
        flush_seconds: float = 0.1,
        batch: int = 512,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_ms = int(retention_days * 86_400_000)
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._buffer: list[tuple[str, list[str]]] = []
        self._full: asyncio.Event | None = None
        self._tenants: set[str] = set()
        self._flushing = asyncio.Lock()

    def open(self, source: str, interaction: str, params: str = "") -> RequestAudit:
        """Return the audit of a request starting now."""
        now_ms = int(self._clock() * 1000)
        return RequestAudit(
            source=source,
            interaction=interaction,
            minid=max(0, now_ms - self._retention_ms),
            now_ms=now_ms,
            params=params,
        )

    def record(self, tenant: str, fields: list[str]) -> None:
        """Queue an entry for the next flush (never waits)."""
        self._buffer.append((tenant, fields))
        if len(self._buffer) >= self._batch and self._full is not None:
            self._full.set()

    async def flush(self) -> int:
        """Write the buffered entries in one pipeline; return how many; keep them when Redis fails.

        A flush already writing (the ``run`` task's) is waited for first: every entry recorded before the call is
        written when it returns, not still on its way in the other one's pipeline.
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        taken, self._buffer = self._buffer, []
        if not taken:
            return 0
        minid = max(0, int(self._clock() * 1000) - self._retention_ms)
        pipe = self._redis.pipeline(transaction=False)
        for tenant, fields in taken:
            pipe.execute_command("XADD", self._keys.audit(tenant), "MINID", "~", minid, "*", *fields)
            self._tenants.add(tenant)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._buffer = taken + self._buffer
            if len(self._buffer) > _MAX_BUFFER:
                log.error(
                    "audit buffer full; oldest entries dropped", extra={"dropped": len(self._buffer) - _MAX_BUFFER}
                )
                del self._buffer[: len(self._buffer) - _MAX_BUFFER]
            log.warning("audit entries not written yet; kept for the next flush", extra={"error": type(exc).__name__})
            return 0
        return len(taken)

    async def run(self, stop: asyncio.Event, *, trim_seconds: float = 3600.0) -> None:
        """Flush every ``flush_seconds`` (or when the buffer fills) and trim past retention hourly, until ``stop``."""
        self._full = asyncio.Event()
        trimmed_at = self._clock()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._full.wait()
            self._full.clear()
            await self.flush()
            if self._clock() - trimmed_at >= trim_seconds:
                trimmed_at = self._clock()
                for tenant in sorted(self._tenants):
                    with contextlib.suppress(RedisError, OSError):
                        await self.trim(tenant)
        await self.close()

    async def close(self) -> None:
        """Flush what is buffered (a process stopping)."""
        await self.flush()
        if self._buffer:
            log.error("audit entries could not be written at shutdown", extra={"count": len(self._buffer)})

    @property
    def pending(self) -> int:
        """Entries recorded and not yet written."""
        return len(self._buffer)

    async def trim(self, tenant: str) -> int:
        """Delete the tenant's entries older than the retention (by the clock); return how many."""
        minid = max(0, int(self._clock() * 1000) - self._retention_ms)
        removed = await self._redis.execute_command(  # type: ignore[no-untyped-call]
            "XTRIM", self._keys.audit(tenant), "MINID", minid
        )
        return int(removed)

    async def entries(
        self,
        tenant: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        client: str | None = None,
        patient: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        scan: int = 10_000,
    ) -> Page:
        """Return the tenant's entries in time order, filtered; ``scan`` bounds the entries one page looks at."""
        start = f"({cursor}" if cursor else (str(since_ms) if since_ms is not None else "-")
        end = str(until_ms) if until_ms is not None else "+"
        found: list[dict[str, Any]] = []
        looked = 0
        last: str | None = None
        while looked < scan:
            want = min(1000, scan - looked)
            chunk = await self._redis.xrange(self._keys.audit(tenant), start, end, count=want) or []
            for raw_id, raw in chunk:
                looked += 1
                last = text(raw_id)
                entry = {text(k): text(v) for k, v in (raw or {}).items()}
                if (client and entry.get("client") != client) or (patient and entry.get("patient") != patient):
                    continue
                found.append(as_json(last, entry))
                if len(found) == limit:
                    return Page(found, last)
            if len(chunk) < want:
                return Page(found, None)
            start = f"({last}"
        return Page(found, last)  # looked at ``scan`` entries: the next page goes on from here


def as_json(entry_id: str, entry: dict[str, str]) -> dict[str, Any]:
    """Return a stored entry as the audit API answers it (``recorded`` as a FHIR instant)."""
    out: dict[str, Any] = {"entry_id": entry_id, **entry}
    at = entry.get("at")
    out["recorded"] = instant(int(at) / 1000) if at and at.isdigit() else None
    if "outcome" in out:
        out["outcome"] = int(out["outcome"])
    return out
