"""Operations routes: liveness, readiness, Prometheus metrics and the SMART clients' public keys."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from conformance.outcome import Issue
from connectors import jwks, read_status, smart_auths
from connectors.poll import parse_instant
from gateway import metrics
from gateway.deps import ServicesDep
from gateway.services import Services
from gateway.web.responses import FhirResponse, outcome_response
from gateway.work.inbound import known_tenants

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answer while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis reachable")
async def readyz(services: ServicesDep) -> Response:
    """Answer 200 when Redis answers, else 503; say how many tenants no worker has started consuming yet."""
    try:
        await services.redis.ping()
        tenants = sorted(set(await known_tenants(services.redis, services.keys)) | _configured(services))
        waiting = await services.inbound.missing_groups(tenants)
    except (RedisError, OSError) as exc:
        return outcome_response(503, [Issue("error", "transient", None, f"Redis: {type(exc).__name__}")])
    return FhirResponse({"status": "ready", "tenants": len(tenants), "tenants_without_worker": len(waiting)})


@router.get("/.well-known/jwks.json", summary="Public keys of the SMART backend clients")
async def jwks_document(request: Request) -> Response:
    """Publish the public keys of every tenant's SMART Backend Services client, for EHRs to register."""
    return JSONResponse(
        request.app.state.jwks, media_type="application/jwk-set+json", headers={"Cache-Control": "public, max-age=300"}
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics_document(services: ServicesDep) -> Response:
    """Expose the gateway's metrics, with queue and connector figures read from Redis now."""
    with contextlib.suppress(RedisError, OSError):  # the counters still tell what this process did
        await read_gauges(services)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def publish_keys(services: Services) -> tuple[dict[str, Any], list[str]]:
    """Return the JWKS of every SMART client key, and the key ids that could not be read."""
    return jwks(smart_auths(services.clients.connector_targets()))


def _configured(services: Services) -> set[str]:
    return set(services.clients.tenants) | {c.tenant for c in services.clients.clients}


async def read_gauges(services: Services) -> None:
    """Read every tenant's queue figures and every connector's status from Redis into the gauges."""
    now = services.clock()
    for tenant in await known_tenants(services.redis, services.keys):
        counts = await services.inbound.counts(tenant)
        metrics.BACKLOG.labels(tenant).set(counts.backlog)
        metrics.PENDING.labels(tenant).set(counts.pending)
        metrics.RETRYING.labels(tenant).set(counts.retrying)
        metrics.DEAD_LETTERS.labels(tenant).set(counts.dead)
        metrics.OLDEST_PENDING.labels(tenant).set(max(now - counts.oldest, 0.0) if counts.oldest else 0.0)
    keys = services.keys
    for tenant in sorted(services.clients.connector_targets()):
        status = await read_status(
            services.redis, tenant, status_key=keys.connector_status(tenant), cursor_key=keys.connector_cursor(tenant),
            lease_key=keys.connector_lease(tenant),
        )  # fmt: skip
        metrics.CONNECTOR_LAST_SUCCESS.labels(tenant).set(status.last_success or 0)
        metrics.CONNECTOR_LAST_ERROR.labels(tenant).set(status.last_error or 0)
        for state in ("closed", "open", "half_open"):
            metrics.CONNECTOR_CIRCUIT.labels(tenant, state).set(1 if status.circuit == state else 0)
        for kind, count in status.counts.items():
            if kind == "dead_letters":
                metrics.CONNECTOR_DEAD_LETTERS.labels(tenant).set(count)
            else:
                metrics.CONNECTOR_CALLS.labels(tenant, kind).set(count)
        for rtype, cursor in status.cursors.items():
            moment = parse_instant(cursor)
            if moment is not None:
                metrics.CONNECTOR_CURSOR.labels(tenant, rtype).set(moment.timestamp())
