"""The worker: read inbound jobs, map FHIR to platform records, publish change events, acknowledge.

Applying a job is one compare-and-set on the record's FHIR version: the new record, its query indexes, the
change event and the acknowledgement of the job are written together, and only if the record still holds the
version the change was classified against. An older version arriving after a newer one changes nothing, and a
job re-delivered after a crash finds its effect already there and is only acknowledged.

Beside its job loop the worker runs its companions (webhook delivery, write-back delivery), each in its own task,
so that a slow receiver or EHR never holds up the jobs, nor they it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.metrics import EVENTS, JOB_SECONDS, JOBS
from gateway.platform.feed import Feed
from gateway.settings import Settings
from gateway.store import Committer, Plan, PlanConflict
from gateway.work.inbound import InboundQueue, Job, known_tenants
from gateway.work.records import RecordWriter
from mappers.registry import MAPPED

log = logging.getLogger("gateway.worker")


def consumer_name() -> str:
    """Return a consumer name unique to this process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Companion(Protocol):
    """A loop that runs beside the job loop until ``stop`` is set (webhook and write-back delivery)."""

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class Applied:
    """What handling one job did."""

    events: list[str]
    skipped: bool = False


class Worker:
    """Turn stored FHIR versions into platform records and change events."""

    def __init__(
        self,
        queue: InboundQueue,
        records: RecordWriter,
        feed: Feed,
        settings: Settings,
        *,
        tenants: Sequence[str] = (),
        name: str | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.queue = queue
        self.feed = feed
        self._records = records
        self._settings = settings
        self._configured = list(tenants)
        self._committer = Committer(queue.redis)
        self.name = name or consumer_name()
        self.companions = list(companions)
        self.processed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; finish and acknowledge the batch in hand before returning."""
        log.info("worker started", extra={"consumer": self.name})
        for configured in self._configured:
            await self.queue.ensure_group(configured)
        companions = [asyncio.create_task(c.run(stop), name=type(c).__name__) for c in self.companions]
        tenants: list[str] = []
        next_refresh = next_reclaim = next_trim = 0.0
        settings = self._settings
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    tenants = await known_tenants(self.queue.redis, self._records.keys)
                    # A new tenant's first job waits at most this long; SMEMBERS on a small set is cheap.
                    next_refresh = now + 0.25
                for tenant in tenants:
                    await self.queue.promote_due(tenant)
                if now >= next_trim:
                    next_trim = now + 60.0
                    for tenant in tenants:
                        await self.feed.trim(tenant, settings.feed_retention_days * 86_400)
                if now >= next_reclaim:
                    next_reclaim = now + max(settings.claim_idle_seconds / 2, 0.5)
                    for tenant in tenants:
                        await self._handle_all(await self._reclaim(tenant))
                if not tenants:
                    await asyncio.wait_for(stop.wait(), timeout=0.25)
                    continue
                jobs = await self.queue.read(tenants, self.name, settings.worker_concurrency, settings.worker_block_ms)
                await self._handle_all(jobs)
            except TimeoutError:
                continue
            except Exception:
                # Redis gone or a bug outside one job: nothing is lost (jobs stay pending); pause and go on.
                log.exception("worker loop error")
                await asyncio.sleep(1.0)
        for task in companions:
            await task
        log.info("worker stopped", extra={"consumer": self.name, "processed": self.processed})

    async def _reclaim(self, tenant: str) -> list[Job]:
        idle_ms = int(self._settings.claim_idle_seconds * 1000)
        jobs = await self.queue.reclaim(tenant, self.name, idle_ms)
        poisoned = [j for j in jobs if j.deliveries > self.queue.max_attempts]
        for job in poisoned:
            await self.queue.fail(job, f"delivered {job.deliveries} times without completing")
            log.warning("job dead-lettered", extra={"type": job.rtype, "job": job.entry_id, "reason": "deliveries"})
        return [j for j in jobs if j not in poisoned]

    async def _handle_all(self, jobs: list[Job]) -> None:
        if jobs:
            await asyncio.gather(*(self.handle(job) for job in jobs))

    async def handle(self, job: Job) -> None:
        """Apply one job, or schedule its retry (dead-lettering it after the last attempt)."""
        started = time.perf_counter()
        try:
            applied = await self.apply(job)
        except Exception as exc:
            outcome = await self.queue.fail(job, f"{type(exc).__name__}: {exc}")
            JOBS.labels(job.fields.get("type", "unknown"), outcome).inc()
            log.warning(
                "job failed",
                extra={"type": job.fields.get("type"), "job": job.entry_id, "attempt": job.attempt + 1,
                       "outcome": outcome, "error": type(exc).__name__},
            )  # fmt: skip
            return
        self.processed += 1
        elapsed = time.perf_counter() - started
        JOBS.labels(job.rtype, "skipped" if applied.skipped else "applied").inc()
        JOB_SECONDS.labels(job.rtype).observe(elapsed)
        for event in applied.events:
            EVENTS.labels(event).inc()
        log.debug(
            "job done",
            extra={"type": job.rtype, "job": job.entry_id, "events": applied.events, "ms": round(elapsed * 1000, 2)},
        )

    async def apply(self, job: Job) -> Applied:
        """Apply ``job`` exactly once in effect; return the events it published."""
        family = MAPPED.get(job.rtype)
        for _ in range(self._settings.conditional_retries):
            plan = Plan()
            self.queue.settle(plan, job)
            if family is None:
                # An unmapped resource that records depend on (a Binary body): re-map those records.
                await self._records.plan_dependents(job, plan)
                await self._committer.commit(plan)
                return Applied([], skipped=True)
            try:
                events = await self._records.plan(job, family, plan)
                await self._committer.commit(plan)
            except PlanConflict:
                continue
            return Applied(events, skipped=not events)
        raise RuntimeError("record kept changing under the job")
