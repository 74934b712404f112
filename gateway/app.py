"""The FastAPI application: ``create_app(settings)`` wires the routes, error translation and the lifespan."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue
from connectors import Connectors, Poller, jwks, smart_auths
from gateway.errors import GatewayError
from gateway.fhir import bundle
from gateway.fhir import routes as fhir_api
from gateway.logs import request_id
from gateway.metrics import HTTP_REQUESTS, HTTP_SECONDS, REGISTRY, connector_gauges, render
from gateway.platform import routes as platform_api
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store.connection import connect
from gateway.web.openapi import AUTH_ERRORS, OTHER_ERRORS, errors
from gateway.web.responses import FhirResponse, outcome_response
from gateway.webhooks import routes as webhook_api
from gateway.work.worker import Worker, open_connectors
from gateway.writebacks import routes as writeback_api

log = logging.getLogger("gateway.http")
# For the OpenAPI document only (auto_error=False: they never answer): gateway.auth checks the token and its role.
EHR_BEARER = HTTPBearer(scheme_name="ehrToken", description="an EHR client's static token", auto_error=False)
PLATFORM_BEARER = HTTPBearer(
    scheme_name="platformToken", description="a platform client's static token", auto_error=False
)


def _loc_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("query", "path", "header", "body"))


def build_poller(services: Services, connectors: Connectors) -> Poller:
    """Return a poller whose pulled resources go through the push's accept path (``bundle.accept``)."""

    async def accept(tenant: str, resources: list[dict[str, Any]]) -> list[int]:
        return await bundle.accept(services, tenant, resources)

    keys = services.keys
    settings = services.settings
    return Poller(services.redis, keys, connectors, accept, name=socket.gethostname(),
                  lease_seconds=settings.poll_lease_seconds)  # fmt: skip


def create_app(
    settings: Settings, clients: ClientsConfig, *, with_worker: bool = False, with_poller: bool = False
) -> FastAPI:
    """Build the app; Redis and (optionally) an in-process worker and poller start in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set")
        redis = connect(settings.redis_url)
        app.state.services = Services.build(settings, clients, redis)
        for tenant in set(clients.tenants) | {c.tenant for c in clients.clients}:
            try:
                await app.state.services.queue.ensure_group(tenant)
            except (RedisError, OSError):
                log.warning("redis not reachable at start-up; readiness will say so")
                break
        app.state.jwks, unreadable = jwks(smart_auths(clients.connector_targets()))
        if unreadable:
            log.warning("SMART keys not published (unreadable)", extra={"kids": unreadable})
        stop = asyncio.Event()
        worker_task = poller_task = None
        # One EHR client (pool, breaker, rate limit) per tenant, shared by the worker's write-backs and the poller.
        connectors = open_connectors(redis, settings, clients) if with_worker or with_poller else None
        if with_worker:
            worker = Worker(redis, settings, clients, connectors=connectors)
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run(stop), name="worker")
        if with_poller and connectors is not None:
            app.state.poller = build_poller(app.state.services, connectors)
            poller_task = asyncio.create_task(app.state.poller.run(stop), name="poller")
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            if poller_task is not None:
                await poller_task
            if connectors is not None:
                await connectors.aclose()
            await redis.aclose()

    app = FastAPI(
        title="FHIR gateway",
        version="0.1.0",
        summary="FHIR R4 edge for EHRs and a normalized API for the engagement platform.",
        lifespan=lifespan,
    )
    app.include_router(fhir_api.router, dependencies=[Security(EHR_BEARER)])
    # writeback_api before platform_api's generic /{route}/{rid}
    app.include_router(writeback_api.router, dependencies=[Security(PLATFORM_BEARER)])
    # before platform_api's generic /{route}, which would take /subscriptions
    app.include_router(
        webhook_api.router,
        prefix="/platform/v1",
        dependencies=[Security(PLATFORM_BEARER)],
        responses={**errors(400), **AUTH_ERRORS, **OTHER_ERRORS},
    )
    app.include_router(platform_api.router, dependencies=[Security(PLATFORM_BEARER)])

    @app.get("/healthz", tags=["Operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """Answer while the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["Operations"], summary="Readiness: Redis reachable, consumer groups present")
    async def readyz(request: Request) -> Response:
        """Answer 200 when Redis answers and every tenant's consumer group exists, else 503."""
        services: Services = request.app.state.services
        try:
            await services.redis.ping()
            configured = set(services.clients.tenants) | {c.tenant for c in services.clients.clients}
            tenants = sorted(configured | set(await services.queue.known_tenants()))
            missing = await services.queue.missing_groups(tenants)
        except (RedisError, OSError) as exc:
            return outcome_response(503, [Issue("error", "transient", None, f"Redis: {type(exc).__name__}")])
        if missing:
            issue = Issue("error", "transient", None, f"no consumer group for {len(missing)} tenant(s)")
            return outcome_response(503, [issue])
        return FhirResponse({"status": "ready", "tenants": len(tenants)})

    @app.get("/.well-known/jwks.json", tags=["Operations"], summary="Public keys of the SMART backend clients")
    async def jwks_document(request: Request) -> Response:
        """Publish the public keys of every tenant's SMART Backend Services client, for EHRs to register."""
        return JSONResponse(
            request.app.state.jwks,
            media_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        """Expose the gateway's metrics, with queue figures read from Redis now."""
        services: Services = request.app.state.services
        try:
            await connector_gauges(services.redis, services.keys, sorted(services.clients.connector_targets()))
            body = await render(services.queue)
        except (RedisError, OSError):
            body = generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        return outcome_response(exc.status, exc.issues, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue("error", "invalid", _loc_path(tuple(e.get("loc", ()))) or None, str(e.get("msg", "invalid")))
            for e in exc.errors()
        ]
        return outcome_response(400, issues)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome_response(exc.status_code, [Issue("error", code, None, str(exc.detail))])

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return outcome_response(500, [Issue("fatal", "exception", None, "internal error; see the gateway log")])

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id.set(rid[:64])
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-Id"] = rid[:64]
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
            HTTP_SECONDS.labels(template).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "route": template,
                    "type": rtype if (rtype := request.path_params.get("rtype")) in R4_RESOURCE_TYPES else None,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)

    return app
