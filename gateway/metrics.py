"""Prometheus metrics: one registry for the API and the worker, rendered at ``/metrics``.

Labels carry routes, resource types, outcomes and tenant names, never ids or data.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from gateway.queue import WorkQueue

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "gateway_http_requests", "HTTP requests answered, by route template and status", ["method", "route", "status"],
    registry=REGISTRY,
)  # fmt: skip
HTTP_SECONDS = Histogram("gateway_http_request_seconds", "HTTP request duration", ["route"], registry=REGISTRY)
RESOURCES = Counter(
    "gateway_resources", "FHIR resources written or matched, by type and outcome", ["type", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
VALIDATION_FAILURES = Counter(
    "gateway_validation_failures", "resources refused as invalid FHIR, by type", ["type"], registry=REGISTRY
)
JOBS = Counter(
    "gateway_jobs", "inbound jobs handled, by FHIR type and outcome (applied, skipped, retry, dead)",
    ["type", "outcome"], registry=REGISTRY,
)  # fmt: skip
JOB_SECONDS = Histogram("gateway_job_seconds", "time to handle one inbound job", ["type"], registry=REGISTRY)
EVENTS = Counter("gateway_change_events", "change events published, by type", ["type"], registry=REGISTRY)
BACKLOG = Gauge("gateway_queue_backlog", "jobs queued, in hand or waiting to retry", ["tenant"], registry=REGISTRY)
PENDING = Gauge("gateway_queue_pending", "jobs delivered to a worker and not yet done", ["tenant"], registry=REGISTRY)
RETRYING = Gauge("gateway_queue_retrying", "jobs waiting for their next attempt", ["tenant"], registry=REGISTRY)
OLDEST_PENDING = Gauge(
    "gateway_queue_oldest_pending_seconds", "age of the oldest job not yet done", ["tenant"], registry=REGISTRY
)
DEAD_LETTERS = Gauge("gateway_dead_letters", "jobs in the dead-letter stream", ["tenant"], registry=REGISTRY)


async def render(queue: WorkQueue) -> bytes:
    """Read the queue gauges from Redis and return the exposition text."""
    now = time.time()
    for tenant in await queue.known_tenants():
        stats = await queue.stats(tenant)
        BACKLOG.labels(tenant).set(stats.backlog)
        PENDING.labels(tenant).set(stats.pending)
        RETRYING.labels(tenant).set(stats.retrying)
        DEAD_LETTERS.labels(tenant).set(stats.dead)
        OLDEST_PENDING.labels(tenant).set(max(now - stats.oldest, 0.0) if stats.oldest else 0.0)
    return generate_latest(REGISTRY)
