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
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from gateway.metrics import EVENTS, JOB_SECONDS, JOBS, observe_many
from gateway.platform.feed import Feed
from gateway.platform.risk import RiskFlags
from gateway.settings import Settings
from gateway.store import Committer, PlanConflict
from gateway.work.inbound import InboundQueue, Job, known_tenants
from gateway.work.records import Batch, Outcome, RecordWriter

log = logging.getLogger("gateway.worker")

# The field of a record's (and an aggregate's) hash that every write bumps and a plan checks.
_REV = "rev"

# Seconds between two moves of due retries back onto the streams, at most (they are due after a backoff of seconds).
_PROMOTE_EVERY = 0.05


def consumer_name() -> str:
    """Return a consumer name unique to this process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Companion(Protocol):
    """A loop that runs beside the job loop until ``stop`` is set (webhook and write-back delivery)."""

    async def run(self, stop: asyncio.Event) -> None: ...


class Worker:
    """Turn stored FHIR versions into platform records and change events."""

    def __init__(
        self,
        lanes: Sequence[InboundQueue],
        records: RecordWriter,
        feed: Feed,
        risks: RiskFlags,
        settings: Settings,
        *,
        tenants: Sequence[str] = (),
        name: str | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.lanes = list(lanes)
        self.queue = self.lanes[0]  # the default lane
        self.feed = feed
        self._records = records
        self._risks = risks
        self._settings = settings
        self._configured = list(tenants)
        self._tenants: list[str] = []
        self._committer = Committer(self.queue.redis)
        self.name = name or consumer_name()
        self.companions = list(companions)
        self.processed = 0
        self._promoted: dict[InboundQueue, float] = {}  # when each lane's due retries were last moved back

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; finish and acknowledge the batches in hand before returning."""
        log.info("worker started", extra={"consumer": self.name})
        if not await self._prepare(stop):
            return
        companions = [asyncio.create_task(c.run(stop), name=type(c).__name__) for c in self.companions]
        # Each lane has a loop of its own: a risk-bearing job never waits behind a batch of other work.
        await asyncio.gather(self._housekeeping(stop), *(self._consume(queue, stop) for queue in self.lanes))
        for task in companions:
            await task
        log.info("worker stopped", extra={"consumer": self.name, "processed": self.processed})

    async def _prepare(self, stop: asyncio.Event) -> bool:
        """Create the configured tenants' consumer groups, waiting (with backoff) while Redis is unavailable.

        Return False when ``stop`` was set first. A worker started before Redis (a pod that wins the race at
        deploy, a Redis restart) waits for it instead of exiting.
        """
        delay = 0.1
        while not stop.is_set():
            try:
                for queue in self.lanes:
                    for configured in self._configured:
                        await queue.ensure_group(configured)
                return True
            except (RedisError, OSError) as exc:
                log.warning("Redis unavailable; the worker retries", extra={"error": type(exc).__name__, "in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 5.0)
        return False

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Keep the list of tenants fresh, trim the feeds, escalate risk flags nobody acknowledged."""
        next_trim = next_escalation = 0.0
        settings = self._settings
        while not stop.is_set():
            now = time.monotonic()
            try:
                # A new tenant's first job waits at most this long; SMEMBERS on a small set is cheap.
                self._tenants = await known_tenants(self.queue.redis, self._records.keys)
                if now >= next_trim:
                    next_trim = now + 60.0
                    for tenant in self._tenants:
                        await self.feed.trim(tenant, settings.feed_retention_days * 86_400)
                if now >= next_escalation:
                    next_escalation = now + 1.0
                    for tenant in self._tenants:
                        await self._escalate(tenant)
            except Exception:
                log.exception("worker housekeeping error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)

    async def _escalate(self, tenant: str) -> None:
        for flag in await self._risks.due(tenant, self._settings.risk_escalate_seconds):
            plan = await self._records.escalate(tenant, flag)
            if plan is None:
                continue
            try:
                await self._committer.commit(plan)
            except PlanConflict:
                continue  # acknowledged, or escalated by another worker, meanwhile
            EVENTS.labels("risk.escalated").inc()
            log.warning("risk flag escalated", extra={"flag": flag.id, "record_type": flag.record_type})

    async def _consume(self, queue: InboundQueue, stop: asyncio.Event) -> None:
        """Read and apply one lane's jobs, with its due retries and the jobs of crashed workers.

        The loop works on three batches at once, so that Redis's work and the worker's overlap instead of taking
        turns: while Redis applies one batch's commit and reads the batch after the next (its jobs, then what they
        find), the worker decides the next one. A batch decided from reads older than a commit is as safe as two
        workers' batches: its commit checks every record and related resource it read, and conflicts if one
        changed. A batch known to have read a record one of the two commits before it wrote is decided again
        before its commit instead of sending a commit bound to conflict. On stop, the batches in hand are applied
        before the loop returns.
        """
        next_reclaim = 0.0
        settings = self._settings
        hand: list[_Turn] = []  # decided, not yet committed
        ahead: asyncio.Future[list[_Turn]] | None = None  # the batch after it, being read
        written_before: set[str] = set()  # what the commit before the last one wrote
        while not stop.is_set():
            now = time.monotonic()
            tenants = self._tenants
            try:
                if not tenants:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=0.1)
                    continue
                if now >= next_reclaim:
                    next_reclaim = now + max(settings.claim_idle_seconds / 2, 0.5)
                    flushing, reading, hand, ahead = hand, ahead, [], None
                    await self._flush(queue, flushing, reading)
                    for tenant in tenants:
                        await self._handle_all(queue, await self._reclaim(queue, tenant))
                if ahead is not None:
                    reading, ahead = ahead, None
                    turns = await reading
                else:  # with a batch in hand the read does not wait: its commit must not wait for new work
                    turns = await self._fetch(queue, tenants, None if hand else settings.worker_block_ms)
                committing = None
                if hand:
                    committing = asyncio.ensure_future(self._complete_all(queue, hand))
                    await asyncio.sleep(0)  # the commit is packed and sent now, before the decide below begins
                    ahead = asyncio.ensure_future(self._fetch(queue, tenants, None))
                hand = turns  # committed next turn, or at stop (and after an error here, on the next turn)
                for turn in turns:
                    await self._decide(queue, turn)
                written = await committing if committing is not None else set()
                _stale(turns, written | written_before)
                written_before = written
            except Exception:
                # Redis gone or a bug outside one job: nothing is lost (jobs stay pending); pause and go on.
                log.exception("worker loop error")
                await asyncio.sleep(1.0)
        try:
            await self._flush(queue, hand, ahead)
        except Exception:  # their jobs stay pending: another worker reclaims them
            log.exception("worker loop error")

    async def _fetch(self, queue: InboundQueue, tenants: Sequence[str], block_ms: int | None) -> list[_Turn]:
        """Read a batch of jobs, one batch per tenant, and what their jobs need; move due retries back first (at
        most every ``_PROMOTE_EVERY`` seconds per lane: they wait seconds, and each look costs a round trip)."""
        now = time.monotonic()
        if now >= self._promoted.get(queue, 0.0) + _PROMOTE_EVERY:
            self._promoted[queue] = now
            for tenant in tenants:
                await queue.promote_due(tenant)
        jobs = await queue.read(tenants, self.name, self._settings.worker_concurrency, block_ms)
        return [await self._read(batch) for batch in _by_tenant(jobs)]

    async def _flush(
        self, queue: InboundQueue, hand: Sequence[_Turn], ahead: asyncio.Future[list[_Turn]] | None
    ) -> None:
        """Commit the batches in hand, then apply the one being read (read again: it may predate those commits)."""
        await self._complete_all(queue, hand)
        if ahead is not None:
            for turn in await ahead:
                await self.handle(*turn.jobs, queue=queue)

    async def drain_round(self, queue: InboundQueue, tenants: Sequence[str], *, block_ms: int | None = None) -> int:
        """Move the tenants' due retries back, read one batch of new jobs and apply it; return the jobs read.

        One turn of the job loop (besides reclaiming), waiting up to ``block_ms`` (default the settings') for jobs,
        without the loop's overlap: the batch is committed before this returns.
        """
        for tenant in tenants:
            await queue.promote_due(tenant)
        wait = self._settings.worker_block_ms if block_ms is None else block_ms
        jobs = await queue.read(tenants, self.name, self._settings.worker_concurrency, wait)
        await self._handle_all(queue, jobs)
        return len(jobs)

    async def _reclaim(self, queue: InboundQueue, tenant: str) -> list[Job]:
        idle_ms = int(self._settings.claim_idle_seconds * 1000)
        jobs = await queue.reclaim(tenant, self.name, idle_ms)
        poisoned = [j for j in jobs if j.deliveries > queue.max_attempts]
        for job in poisoned:
            await queue.fail(job, f"delivered {job.deliveries} times without completing")
            log.warning("job dead-lettered", extra={"type": job.rtype, "job": job.entry_id, "reason": "deliveries"})
        return [j for j in jobs if j not in poisoned]

    async def _handle_all(self, queue: InboundQueue, jobs: list[Job]) -> None:
        """Apply one batch per tenant: a tenant's keys share a hash slot, so each commit stays on one node of a
        Redis Cluster (on a single Redis this costs one commit per tenant present in the read)."""
        for batch in _by_tenant(jobs):
            await self.handle(*batch, queue=queue)

    async def handle(self, *jobs: Job, queue: InboundQueue | None = None) -> None:
        """Apply jobs read from ``queue`` (the default lane) as one batch; schedule the retry of each one that
        failed (dead-lettering it at the last)."""
        queue = queue or self.queue
        turn = await self._read(list(jobs))
        await self._decide(queue, turn)
        await self._complete(queue, turn)

    async def _read(self, jobs: list[Job]) -> _Turn:
        """Start a batch: read what its jobs need."""
        turn = _Turn(jobs, time.perf_counter())
        try:
            turn.batch = await self._records.read(jobs)
        except Exception as exc:  # Redis, or a bug outside one job's mapping: every job is tried again
            turn.error = exc
        return turn

    async def _decide(self, queue: InboundQueue, turn: _Turn) -> None:
        """Decide a batch from what it read, settling its applied jobs in the plan."""
        if turn.batch is None:
            return
        try:
            outcome = await self._records.decide(turn.batch)
        except Exception as exc:
            turn.error = exc
            return
        queue.settle_all(outcome.plan, [job for job in turn.jobs if job.entry_id not in outcome.failed])
        turn.outcome = outcome

    async def _complete_all(self, queue: InboundQueue, turns: Sequence[_Turn]) -> set[str]:
        """Commit the batches; return the keys of the records their commits wrote."""
        written: set[str] = set()
        for turn in turns:
            written |= await self._complete(queue, turn)
        return written

    async def _complete(self, queue: InboundQueue, turn: _Turn) -> set[str]:
        """Commit a decided batch, deciding it again while a concurrent write changed what it read; schedule the
        retry of each job that failed. Return the keys of the records the commit wrote (none when it failed)."""
        jobs = turn.jobs
        failed: dict[str, Exception] = {}
        events: dict[str, list[str]] = {}
        written: set[str] = set()
        try:
            if turn.error is not None:
                raise turn.error
            outcome = turn.outcome
            for _ in range(self._settings.conditional_retries):
                if outcome is None:
                    outcome = await self._records.plan(jobs)
                    queue.settle_all(outcome.plan, [job for job in jobs if job.entry_id not in outcome.failed])
                try:
                    await self._committer.commit(outcome.plan)
                except PlanConflict:
                    outcome = None
                    continue  # a record or resource it read changed (another worker, the EHR): decide again
                failed, events = outcome.failed, outcome.events
                written = outcome.plan.checked_keys(_REV)
                break
            else:
                failed = {job.entry_id: RuntimeError("records kept changing under the batch") for job in jobs}
        except Exception as exc:  # Redis, or a bug outside one job's mapping: every job is tried again
            failed = {job.entry_id: exc for job in jobs}
        elapsed = (time.perf_counter() - turn.started) / len(jobs)
        # Metrics are counted per batch: a labelled series looked up once per batch, not once per job.
        outcomes: dict[tuple[str, str], int] = {}
        published: dict[str, int] = {}
        for job in jobs:
            if failed and job.entry_id in failed:
                await self._failed(queue, job, failed[job.entry_id])
                continue
            applied = events.get(job.entry_id)
            at = (job.fields["type"], "applied" if applied else "skipped")
            outcomes[at] = outcomes.get(at, 0) + 1
            if applied:
                for event in applied:
                    published[event] = published.get(event, 0) + 1
        for (rtype, result), count in outcomes.items():
            self.processed += count
            JOBS.labels(rtype, result).inc(count)
            observe_many(JOB_SECONDS.labels(rtype), elapsed, count)
        for event, count in published.items():
            EVENTS.labels(event).inc(count)
        log.debug("batch done", extra={"jobs": len(jobs), "failed": len(failed), "ms": round(elapsed * 1000, 2)})
        return written

    async def _failed(self, queue: InboundQueue, job: Job, exc: Exception) -> None:
        outcome = await queue.fail(job, f"{type(exc).__name__}: {exc}")
        JOBS.labels(job.fields.get("type", "unknown"), outcome).inc()
        log.warning(
            "job failed",
            extra={"type": job.fields.get("type"), "job": job.entry_id, "attempt": job.attempt + 1,
                   "outcome": outcome, "error": type(exc).__name__},
        )  # fmt: skip


@dataclass
class _Turn:
    """One tenant's batch on its way: read, decided (or failed), then committed."""

    jobs: list[Job]
    started: float  # perf_counter when it was read
    batch: Batch | None = None
    outcome: Outcome | None = None
    error: Exception | None = None


def _by_tenant(jobs: Sequence[Job]) -> list[list[Job]]:
    """Split jobs into one batch per tenant, in the order each tenant first appears."""
    by_tenant: dict[str, list[Job]] = {}
    for job in jobs:
        by_tenant.setdefault(job.tenant, []).append(job)
    return list(by_tenant.values())


def _stale(turns: Sequence[_Turn], written: set[str]) -> None:
    """Drop the decisions of batches that read a record the commits just made wrote: their commits would conflict,
    so they are decided again, from fresh reads, when their turn to commit comes."""
    if not written:
        return
    for turn in turns:
        if turn.outcome is not None and not written.isdisjoint(turn.outcome.plan.checked_keys(_REV)):
            turn.outcome = None
