"""Prometheus metrics: one registry for the API and the worker, rendered at ``/metrics``.

Labels carry routes, resource types, outcomes and tenant names, never ids or data.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from redis.asyncio import Redis

from connectors.poll import parse_instant
from connectors.status import read_status
from gateway.store.keys import Keyspace
from gateway.work.inbound import WorkQueue

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
LENIENT_ACCEPTED = Counter(
    "gateway_lenient_accepted",
    "resources accepted with errors under a tenant's lenient validation policy, by type",
    ["type"],
    registry=REGISTRY,
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


CONNECTOR_LAST_SUCCESS = Gauge(
    "gateway_connector_last_success_timestamp_seconds", "when the tenant's EHR last answered a call with a 2xx",
    ["tenant"], registry=REGISTRY,
)  # fmt: skip
CONNECTOR_LAST_ERROR = Gauge(
    "gateway_connector_last_error_timestamp_seconds", "when a call to the tenant's EHR last failed, by error kind",
    ["tenant"], registry=REGISTRY,
)  # fmt: skip
CONNECTOR_CIRCUIT = Gauge(
    "gateway_connector_circuit_state", "1 for the state the EHR's circuit breaker is in (closed, open, half_open)",
    ["tenant", "state"], registry=REGISTRY,
)  # fmt: skip
CONNECTOR_CALLS = Gauge(
    "gateway_connector_calls", "EHR calls so far, by what happened: requests, errors, retries, rate_limited (429), "
    "throttled (held back by the connector's own rate limit)", ["tenant", "kind"], registry=REGISTRY,
)  # fmt: skip
CONNECTOR_CURSOR = Gauge(
    "gateway_connector_poll_cursor_timestamp_seconds", "the poll cursor (newest lastUpdated accepted) per type",
    ["tenant", "type"], registry=REGISTRY,
)  # fmt: skip


async def connector_gauges(redis: Redis, keys: Keyspace, tenants: list[str]) -> None:
    """Read every connector's status and poll cursors from Redis into the gauges."""
    for tenant in tenants:
        status = await read_status(
            redis, tenant, status_key=keys.connector_status(tenant), cursor_key=keys.connector_cursor(tenant),
            lease_key=keys.connector_lease(tenant),
        )  # fmt: skip
        CONNECTOR_LAST_SUCCESS.labels(tenant).set(status.last_success or 0)
        CONNECTOR_LAST_ERROR.labels(tenant).set(status.last_error or 0)
        for state in ("closed", "open", "half_open"):
            CONNECTOR_CIRCUIT.labels(tenant, state).set(1 if status.circuit == state else 0)
        for kind, count in status.counts.items():
            CONNECTOR_CALLS.labels(tenant, kind).set(count)
        for rtype, cursor in status.cursors.items():
            moment = parse_instant(cursor)
            if moment is not None:
                CONNECTOR_CURSOR.labels(tenant, rtype).set(moment.timestamp())
