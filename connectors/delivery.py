"""Deliver the platform's write-backs to each tenant's EHR, exactly once in effect.

- A ``create`` is a conditional create: ``POST [base]/{type}`` with ``If-None-Exist`` on the write-back's business
  identifier, so a retry (in the request, or a later attempt of the job) finds the copy already there instead of
  making a second one.
- An ``update`` is ``PUT [base]/{type}/{id}`` with ``If-Match`` on the EHR's version (read first when the
  write-back does not know it). On 412 the resource is read again: when the EHR already holds what we send (an
  earlier attempt landed and its answer was lost) the write-back is delivered; otherwise it fails with the reason
  and nothing is overwritten.
- An EHR 4xx with its OperationOutcome fails the write-back with the EHR's issues; transport errors, 408, 429 and
  5xx (after the request's own retries), an open circuit and a lost token are retried later by the queue, and
  dead-lettered after ``GATEWAY_WRITEBACK_MAX_ATTEMPTS``.
- Delivered, the write-back records the EHR's resource id and version (from ``Location``, ``ETag`` or the body).
- Before any request, the gateway checks the resource once more (``check``: the checks it was built with); one it
  refuses fails the write-back with that OperationOutcome, and the EHR is never called.

Logs carry write-back ids, kinds, resource types and error kinds: never a resource or a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from connectors.client import EHRClient, Written
from connectors.errors import AuthError, ConnectorError, EHRError, PreconditionFailed, retryable
from connectors.pool import Connectors

log = logging.getLogger("connectors.delivery")

_IGNORED = frozenset({"id", "meta", "text"})


Settle = Literal["done", "retry", "dead"]


class OutboundJob(Protocol):
    """A job of the outbound queue: deliver write-back ``writeback_id`` of ``tenant``."""

    @property
    def tenant(self) -> str: ...

    @property
    def writeback_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def deliveries(self) -> int: ...


J = TypeVar("J", bound=OutboundJob)


class OutboundQueue(Protocol[J]):
    """The gateway's outbound queue (``gateway.writebacks.queue``), as delivery consumes it."""

    max_attempts: int

    async def promote_due(self, tenant: str) -> int: ...

    async def read(self, tenants: Sequence[str], consumer: str, count: int, block_ms: int) -> list[J]: ...

    async def reclaim(self, tenant: str, consumer: str, min_idle_ms: int) -> list[J]: ...

    async def start(self, job: J) -> str: ...

    async def state(self, job: J) -> dict[str, str]: ...

    async def record(
        self, job: J, fields: dict[str, str], then: Settle, *, retry_after: float | None = None
    ) -> tuple[str, Settle]: ...

    async def acknowledge(self, job: J) -> None: ...


class Check(Protocol):
    """The gateway's last check of a resource before it is sent: the OperationOutcome that refuses it, or None."""

    def __call__(self, resource: Mapping[str, Any], /) -> dict[str, Any] | None: ...


class Undeliverable(ConnectorError):
    """The write-back cannot be delivered as it stands (a bad state, or a conflicting EHR version)."""

    kind = "undeliverable"

    def __init__(self, message: str, *, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Delivered:
    """The EHR's id and version of a delivered write-back."""

    rid: str
    version: str


def holds(current: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    """Tell whether the EHR's ``current`` resource already has every element ``sent`` sets (meta, text aside)."""
    return all(current.get(k) == v for k, v in sent.items() if k not in _IGNORED)


def _version(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


async def deliver(client: EHRClient, state: Mapping[str, str], check: Check | None = None) -> Delivered:
    """Store the write-back described by ``state`` in the EHR, unless ``check`` refuses it; return what the EHR
    calls it."""
    rtype, method = state.get("resource_type", ""), state.get("method", "")
    try:
        resource = json.loads(state.get("resource") or "")
    except ValueError:
        resource = None
    if not rtype or not isinstance(resource, dict) or resource.get("resourceType") != rtype:
        raise Undeliverable("the write-back holds no resource of its type")
    refused = check(resource) if check is not None else None
    if refused is not None:
        raise Undeliverable(f"the gateway's checks refuse the {rtype}; nothing was sent to the EHR", outcome=refused)
    if method == "create":
        written = await client.create(rtype, resource, if_none_exist=state.get("if_none_exist") or None)
        return _delivered(written, rtype)
    if method == "update":
        rid = state.get("resource_id", "")
        if not rid:
            raise Undeliverable("an update write-back names no resource id")
        version = state.get("if_match") or _version(await client.read(rtype, rid))
        try:
            written = await client.update(rtype, rid, resource, if_match=version)
        except PreconditionFailed as exc:
            current = await client.read(rtype, rid)
            if holds(current, resource):
                return Delivered(rid, _version(current) or "")
            raise Undeliverable(
                f"the EHR's {rtype} changed since version {version} (now {_version(current)}); not overwritten",
                outcome=exc.outcome,
            ) from None
        return _delivered(written, rtype, rid)
    raise Undeliverable(f"unknown write-back method {method[:20]!r}")


def _delivered(written: Written, rtype: str, rid: str | None = None) -> Delivered:
    found = written.rid or rid
    if not found:
        raise Undeliverable(f"the EHR stored the {rtype} but said neither its id nor where (no Location)")
    return Delivered(found, written.version or "")


class Delivery(Generic[J]):
    """The worker's write-back delivery loop for every tenant with an EHR connector."""

    def __init__(
        self,
        queue: OutboundQueue[J],
        connectors: Connectors,
        *,
        consumer: str,
        check: Check | None,
        concurrency: int = 8,
        block_ms: int = 250,
        claim_idle_seconds: float = 30.0,
    ) -> None:
        self.queue = queue
        self.connectors = connectors
        self.consumer = consumer
        self._check = check
        self._concurrency = concurrency
        self._block_ms = block_ms
        self._claim_idle = claim_idle_seconds
        self.delivered = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; finish the deliveries in hand first (their attempts in flight; a delivery
        waiting to retry goes back to the retry queue instead of waiting). The tenants are those with a
        connector at each round: a reloaded clients file's new EHR block is delivered to from the next one."""
        log.info(
            "write-back delivery started", extra={"consumer": self.consumer, "tenants": len(self.connectors.tenants)}
        )
        loop = asyncio.get_running_loop()
        # Once stopping, a delivery being retried gives up at once and goes back to the retry queue (durable):
        # the shutdown does not wait out the EHR's outage.
        winding = asyncio.create_task(self._wind_down_when(stop), name="write-back wind-down")
        try:
            await self._deliver_until(stop, loop)
        finally:
            winding.cancel()
        log.info("write-back delivery stopped", extra={"consumer": self.consumer, "delivered": self.delivered})

    async def _wind_down_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.connectors.wind_down()

    async def _deliver_until(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        next_reclaim = 0.0
        while not stop.is_set():
            tenants = self.connectors.tenants
            try:
                if not tenants:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    continue
                if loop.time() >= next_reclaim:
                    next_reclaim = loop.time() + max(self._claim_idle / 2, 0.5)
                    for tenant in tenants:
                        await self._handle_all(await self._reclaim(tenant))
                await self.step(tenants)
            except Exception:
                # Redis gone or a bug outside one job: nothing is lost (jobs stay pending); pause and go on.
                log.exception("write-back delivery loop error")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def step(self, tenants: list[str]) -> int:
        """Promote due retries, read new jobs and deliver them; return how many were handled."""
        for tenant in tenants:
            await self.queue.promote_due(tenant)
        jobs = await self.queue.read(tenants, self.consumer, self._concurrency, self._block_ms)
        await self._handle_all(jobs)
        return len(jobs)

    async def _reclaim(self, tenant: str) -> list[J]:
        jobs = await self.queue.reclaim(tenant, self.consumer, int(self._claim_idle * 1000))
        kept = []
        for job in jobs:
            if job.deliveries > self.queue.max_attempts:
                error = f"handed out {job.deliveries} times without finishing"
                await self.queue.record(job, {"error": error}, "dead")
                log.warning("write-back dead-lettered", extra={"writeback": job.writeback_id, "reason": "deliveries"})
            else:
                kept.append(job)
        return kept

    async def _handle_all(self, jobs: list[J]) -> None:
        if jobs:
            await asyncio.gather(*(self.handle(job) for job in jobs))

    async def handle(self, job: J) -> str:
        """Deliver one job and record its outcome; return the write-back's status after it."""
        client = self.connectors.get(job.tenant)
        if client is None:
            return "queued"  # not this process's tenant: left pending for a worker that has its connector
        started = await self.queue.start(job)
        if started != "delivering":
            # Gone, or settled by an earlier delivery of the same job: nothing to send again.
            await self.queue.acknowledge(job)
            return started
        state = await self.queue.state(job)
        extra = {"writeback": job.writeback_id, "kind": job.kind, "type": state.get("resource_type")}
        try:
            done = await deliver(client, state, self._check)
        except Undeliverable as exc:
            fields = {"status": "failed", "error": exc.message[:300]}
            if exc.outcome:
                fields["outcome"] = json.dumps(exc.outcome, separators=(",", ":"))
            await self.queue.record(job, fields, "done")
            log.warning("write-back failed", extra={**extra, "error": exc.kind})
            return "failed"
        except Exception as exc:
            return await self._failed(job, exc, extra)
        await self.queue.record(
            job, {"status": "delivered", "ehr_id": done.rid, "ehr_version": done.version, "error": ""}, "done"
        )
        self.delivered += 1
        log.info("write-back delivered", extra=extra)
        return "delivered"

    async def _failed(self, job: J, exc: Exception, extra: dict[str, Any]) -> str:
        error = exc.message if isinstance(exc, ConnectorError) else f"{type(exc).__name__}"
        fields = {"error": error[:300]}
        if isinstance(exc, EHRError) and exc.outcome:
            fields["outcome"] = json.dumps(exc.outcome, separators=(",", ":"))
        if isinstance(exc, ConnectorError) and not retryable(exc) and not isinstance(exc, AuthError):
            # The EHR refused it (a 4xx and its OperationOutcome), or it can never be sent (an unsafe URL).
            fields["status"] = "failed"
            await self.queue.record(job, fields, "done")
            log.warning("write-back failed", extra={**extra, "error": exc.kind})
            return "failed"
        if not isinstance(exc, ConnectorError):  # a bug, not the EHR: logged whole, retried like a transient error
            log.exception("write-back delivery error", extra=extra)
        retry_after = getattr(exc, "retry_after", None)
        _, then = await self.queue.record(
            job, fields, "retry", retry_after=float(retry_after) if isinstance(retry_after, int | float) else None
        )
        status = "dead_lettered" if then == "dead" else "queued"
        log.warning("write-back not delivered yet", extra={**extra, "error": getattr(exc, "kind", "bug"),
                                                           "outcome": status})  # fmt: skip
        return status
