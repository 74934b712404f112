"""The worker: read inbound jobs, map FHIR to platform records, publish change events, acknowledge.

Applying a job is one compare-and-set on the record's FHIR version: the new record, its query indexes, the
change event and the acknowledgement of the job are written together, and only if the record still holds the
version the change was classified against. An older version arriving after a newer one changes nothing, and a
job re-delivered after a crash finds its effect already there and is only acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from connectors import Connectors, Delivery, OutboundQueue, RedisObserver
from gateway.metrics import EVENTS, JOB_SECONDS, JOBS
from gateway.platform.feed import Feed
from gateway.settings import ClientsConfig, Settings
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan, PlanConflict
from gateway.store.store import Store
from gateway.webhooks.dispatch import Dispatcher
from gateway.work.inbound import Job, WorkQueue
from gateway.work.records import RecordWriter
from mappers.registry import MAPPED

log = logging.getLogger("gateway.work.worker")


def open_connectors(redis: Redis, settings: Settings, clients: ClientsConfig) -> Connectors:
    """Open one EHR client per tenant with an EHR block, reporting its status into Redis."""
    keys = Keyspace(settings.key_prefix)
    return Connectors(clients.connector_targets(), observer=lambda t: RedisObserver(redis, keys.connector_status(t)))


def consumer_name() -> str:
    """Return a consumer name unique to this process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Applied:
    """What handling one job did."""

    events: list[str]
    skipped: bool = False


class Worker:
    """Turn stored FHIR versions into platform records and change events."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        clients: ClientsConfig,
        *,
        name: str | None = None,
        connectors: Connectors | None = None,
    ):
        self._redis = redis
        self._settings = settings
        self._clients = clients
        self._keys = Keyspace(settings.key_prefix)
        self.queue = WorkQueue(
            redis,
            self._keys,
            max_attempts=settings.max_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
        )
        self._store = Store(redis, self._keys, max_backlog=settings.max_backlog, dedupe_seconds=0, retries=1)
        self._records = RecordWriter(redis, self._keys, self._store, clients)
        self.feed = Feed(redis, self._keys)
        self.name = name or consumer_name()
        self.processed = 0
        self.webhooks = Dispatcher(redis, settings, clients, name=self.name)
        # Write-backs go to the EHRs from their own task too; the app shares its connectors when it has them.
        self._own_connectors = connectors is None
        self.connectors = connectors if connectors is not None else open_connectors(redis, settings, clients)
        outbound = OutboundQueue(
            redis, self._keys, max_attempts=settings.writeback_max_attempts,
            backoff_base=settings.retry_base_seconds, backoff_max=settings.retry_max_seconds,
        )  # fmt: skip
        self.writebacks = Delivery(
            outbound, self.connectors, consumer=self.name, concurrency=settings.worker_concurrency,
            block_ms=settings.worker_block_ms, claim_idle_seconds=settings.claim_idle_seconds,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; finish and acknowledge the batch in hand before returning."""
        log.info("worker started", extra={"consumer": self.name})
        for configured in self._clients.tenants.keys() | {c.tenant for c in self._clients.clients}:
            await self.queue.ensure_group(configured)
        # Webhooks go out from their own tasks, so a slow receiver never holds up the jobs (nor they it).
        webhooks = asyncio.create_task(self.webhooks.run(stop), name="webhooks")
        writebacks = asyncio.create_task(self.writebacks.run(stop), name="writebacks")
        tenants: list[str] = []
        next_refresh = next_reclaim = next_trim = 0.0
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    tenants = await self.queue.tenants()
                    # A new tenant's first job waits at most this long; SMEMBERS on a small set is cheap.
                    next_refresh = now + 0.25
                for tenant in tenants:
                    await self.queue.promote_due(tenant)
                if now >= next_trim:
                    next_trim = now + 60.0
                    for tenant in tenants:
                        await self.feed.trim(tenant, self._settings.feed_retention_days * 86_400)
                if now >= next_reclaim:
                    next_reclaim = now + max(self._settings.claim_idle_seconds / 2, 0.5)
                    for tenant in tenants:
                        await self._handle_all(await self._reclaim(tenant))
                if not tenants:
                    await asyncio.wait_for(stop.wait(), timeout=0.25)
                    continue
                jobs = await self.queue.read(
                    tenants, self.name, self._settings.worker_concurrency, self._settings.worker_block_ms
                )
                await self._handle_all(jobs)
            except TimeoutError:
                continue
            except Exception:
                # Redis gone or a bug outside one job: nothing is lost (jobs stay pending); pause and go on.
                log.exception("worker loop error")
                await asyncio.sleep(1.0)
        await webhooks
        await writebacks
        if self._own_connectors:
            await self.connectors.aclose()
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
            reason = f"{type(exc).__name__}: {exc}"
            outcome = await self.queue.fail(job, reason)
            JOBS.labels(job.rtype, outcome).inc()
            log.warning(
                "job failed",
                extra={"type": job.rtype, "job": job.entry_id, "attempt": job.attempt + 1, "outcome": outcome,
                       "error": type(exc).__name__},
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
            extra={"type": job.rtype, "job": job.entry_id, "events": applied.events,
                   "ms": round(elapsed * 1000, 2)},
        )  # fmt: skip

    async def apply(self, job: Job) -> Applied:
        """Apply ``job`` exactly once in effect; return the events it published."""
        family = MAPPED.get(job.rtype)
        for _ in range(self._settings.conditional_retries):
            plan = Plan()
            self.queue.acknowledge(plan, job)
            if family is None:
                # An unmapped resource that records depend on (a Binary body): re-map those records.
                await self._records.plan_dependents(job, plan)
                await self._commit(plan)
                return Applied([], skipped=True)
            try:
                events = await self._records.plan(job, family, plan)
                await self._commit(plan)
            except PlanConflict:
                continue
            return Applied(events, skipped=not events)
        raise RuntimeError("record kept changing under the job")

    async def _commit(self, plan: Plan) -> None:
        await self.queue._committer.commit(plan)
