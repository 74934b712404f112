"""Prometheus metrics: one registry for the API and the worker, rendered at ``/metrics``.

Labels carry routes, resource types, outcomes and tenant names, never ids or data. This module is a leaf: it
declares every metric and imports nothing of the gateway; ``gateway.ops`` fills the gauges read from Redis.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

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
WEBHOOK_DELIVERIES = Counter(
    "gateway_webhook_deliveries", "webhook delivery attempts, by outcome (delivered, retry, dead)", ["outcome"],
    registry=REGISTRY,
)  # fmt: skip
RATE_LIMITED = Counter(
    "gateway_rate_limited", "requests refused (429) because the client was over its rate limit, by tenant and client",
    ["tenant", "client"], registry=REGISTRY,
)  # fmt: skip
WRITES_SHED = Counter(
    "gateway_writes_shed",
    "FHIR writes refused (503) because the process was working on GATEWAY_MAX_WRITES_IN_FLIGHT already",
    registry=REGISTRY,
)


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
CONNECTOR_DEAD_LETTERS = Gauge(
    "gateway_connector_poll_dead_letters", "polled resources the accept path refused (each recorded as a dead letter "
    "with its error while the rest of its page and the cursor went on), all time", ["tenant"], registry=REGISTRY,
)  # fmt: skip
CONNECTOR_CURSOR = Gauge(
    "gateway_connector_poll_cursor_timestamp_seconds", "the poll cursor (newest lastUpdated accepted) per type",
    ["tenant", "type"], registry=REGISTRY,
)  # fmt: skip


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """Observe ``amount`` ``count`` times, as that many ``histogram.observe(amount)`` calls would: the same bucket
    and count, the sum raised by ``amount * count`` (one multiplication instead of ``count`` additions, so it may
    differ from theirs in the last bits). One bucket lookup and two locked additions instead of ``count`` of each:
    the worker observes every job of a batch with the batch's time per job."""
    if count <= 0:
        return
    buckets, bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    if buckets is None or bounds is None or total is None:  # not a labelled child as prometheus_client makes them
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for value, bound in zip(buckets, bounds, strict=True):
        if amount <= bound:
            value.inc(count)
            break
