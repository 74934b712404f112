"""The FastAPI application: ``create_app(settings)`` mounts the routers, translates errors, runs the lifespan.

Composition only: every long-lived object comes from ``Services.build``; the routers come from each feature
package's ``routes`` module; errors are turned into OperationOutcomes here, once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

from conformance.outcome import Issue
from gateway import heap, ops
from gateway.access import AuditRecorder
from gateway.access import routes as audit_routes
from gateway.console import routes as console_routes
from gateway.console.recording import RecordRejections
from gateway.errors import GatewayError, Unavailable, request_invalid
from gateway.fhir import routes as fhir_routes
from gateway.identity import routes as identity_routes
from gateway.identity.assertion import OAuthError
from gateway.platform import risk_routes
from gateway.platform import routes as platform_routes
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.web.access_log import AccessLog
from gateway.web.negotiation import Negotiation
from gateway.web.openapi import AUTH_ERRORS, FHIR_ERRORS, OTHER_ERRORS, errors, with_bearer, with_outcome_schemas
from gateway.web.responses import outcome_response
from gateway.webhooks import routes as webhook_routes
from gateway.writebacks import routes as writeback_routes

log = logging.getLogger("gateway.http")
# For the OpenAPI document only (auto_error=False: they never answer): gateway.deps checks the token and its role.
# The platform routes declare theirs as a dependency; the FHIR routes' is added to the document (``with_bearer``).
EHR_BEARER = HTTPBearer(scheme_name="ehrToken", description="an EHR client's static token", auto_error=False)
PLATFORM_BEARER = HTTPBearer(
    scheme_name="platformToken", description="a platform client's static token", auto_error=False
)


def create_app(
    settings: Settings,
    clients: ClientsConfig | None = None,
    *,
    with_worker: bool = False,
    with_poller: bool = False,
    services: Services | None = None,
) -> FastAPI:
    """Build the app; its services (and, when asked, an in-process worker and poller) start in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services or Services.build(settings, clients)
        app.state.services = built
        app.state.fhir_writes = built.edge.writes  # read by the FHIR routes (gateway.web.routing.FhirRoute)

        def publish_keys(_: ClientsConfig | None = None) -> None:
            app.state.jwks, unreadable = ops.publish_keys(built)
            if unreadable:
                log.warning("SMART keys not published (unreadable)", extra={"kids": unreadable})

        publish_keys()
        built.on_reload(publish_keys)  # an EHR block added or changed by a reload: its key published at once
        stop = asyncio.Event()
        tasks = [asyncio.create_task(built.audit.run(stop), name="audit")]  # flushes what is buffered when stopped
        if with_worker:
            app.state.worker = built.worker()
            tasks.append(asyncio.create_task(app.state.worker.run(stop), name="worker"))
        if services is None and settings.clients_file is not None:
            # The clients file read again on change or SIGHUP: new and revoked credentials without a restart.
            reloader = built.clients_reloader()
            tasks.append(asyncio.create_task(reloader.run(stop), name="clients-reload"))
        if with_poller:  # also when no tenant polls yet: a reloaded clients file may bring one
            app.state.poller = built.poller()
            tasks.append(asyncio.create_task(app.state.poller.run(stop), name="poller"))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                await task
            if services is None:
                await built.aclose()

    app = FastAPI(
        title="FHIR gateway",
        version="0.1.0",
        summary="FHIR R4 edge for EHRs and a normalized API for the engagement platform.",
        lifespan=lifespan,
        **_NO_FASTAPI_TELEMETRY,
    )
    platform_errors = {**errors(400), **AUTH_ERRORS, **OTHER_ERRORS}
    platform_bearer = [Security(PLATFORM_BEARER)]
    app.include_router(identity_routes.router)  # before the FHIR routes: /fhir/R4/.well-known/...
    for fhir_router in fhir_routes.ROUTERS:  # each handler checks the token itself (gateway.deps.fhir_caller)
        app.include_router(fhir_router, responses=FHIR_ERRORS)
    # Write-backs, webhooks and risk flags before the platform's generic /{route}/{rid}, which would take them.
    app.include_router(writeback_routes.router, dependencies=platform_bearer)
    app.include_router(
        webhook_routes.router, prefix="/platform/v1", dependencies=platform_bearer, responses=platform_errors
    )
    app.include_router(risk_routes.router, dependencies=platform_bearer, responses=platform_errors)
    app.include_router(audit_routes.router, dependencies=platform_bearer)
    app.include_router(platform_routes.router, dependencies=platform_bearer)
    app.include_router(ops.router)
    app.include_router(console_routes.router)
    app.add_middleware(Negotiation)  # 406 and the answer's media type for every FHIR route
    document = app.openapi

    def openapi() -> dict[str, Any]:
        # The error answers refer to the OperationOutcome schema rather than naming it as a model, which cost
        # FastAPI a validator per route and status, built on the first request (about 60 ms of every start).
        if app.openapi_schema is None:
            with_bearer(with_outcome_schemas(document()), fhir_routes.PREFIX, EHR_BEARER)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        return outcome_response(exc.status, exc.issues, exc.headers)

    @app.exception_handler(OAuthError)
    async def oauth_error(_: Request, exc: OAuthError) -> Response:
        return identity_routes.oauth_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        return await gateway_error(request, request_invalid(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome_response(exc.status_code, [Issue("error", code, None, str(exc.detail))])

    @app.exception_handler(redis_errors.RedisError)
    async def store_error(request: Request, exc: redis_errors.RedisError) -> Response:
        # Redis unreachable, frozen (no answer within GATEWAY_REDIS_TIMEOUT_SECONDS), loading, read-only or failing
        # over: the client may retry; nothing it sent is lost that a 2xx promised.
        if isinstance(exc, STORE_UNAVAILABLE) or _store_busy(exc):
            log.warning("Redis unavailable", extra={"error": type(exc).__name__})
            return await gateway_error(request, Unavailable())
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return outcome_response(500, [Issue("fatal", "exception", None, "internal error; see the gateway log")])

    app.add_middleware(AccessLog)  # the access log, request metrics and X-Request-Id
    app.add_middleware(RecordRejections)  # counts each FHIR request's refused resources for the console
    app.add_middleware(AuditRecorder)  # outermost: every FHIR and platform answer, refusals too, is audited
    return app


# FastAPI's own OpenTelemetry (in recent versions) traces every request once the process has a global provider (an
# SDK, OTEL_PYTHON_TRACER_PROVIDER): its spans hold each request's path and query string, so a search's values (a
# name, an identifier) would reach the collector. The gateway's telemetry is its Prometheus metrics and ids-only
# logs, so it is off; looking for the providers also cost about 1% of a request's CPU.
_NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)

STORE_UNAVAILABLE = (
    redis_errors.ConnectionError,  # BusyLoadingError (a restart replaying its AOF) is one
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica during a failover
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.OutOfMemoryError,  # maxmemory reached (noeviction): writes are refused until memory is freed
)


def _store_busy(exc: redis_errors.RedisError) -> bool:
    """Tell whether Redis refused for a passing reason it names only in its message (a long script running)."""
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("BUSY ")


def from_environment() -> FastAPI:
    """Build the app from the environment's settings and clients file (each process of ``api --workers N``)."""
    from gateway import logs

    logs.configure()
    # `api` refused GATEWAY_DEVELOPMENT before it started these processes; never development here.
    app = create_app(Settings().model_copy(update={"development": False}))
    heap.settle()
    return app
