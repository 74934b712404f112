"""The FastAPI application: ``create_app(settings)`` wires the routes, error translation and the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conformance.fhir_models import R4_RESOURCE_TYPES
from conformance.outcome import Issue
from gateway import fhir_api, platform_api
from gateway.connection import connect
from gateway.errors import GatewayError
from gateway.logs import request_id
from gateway.responses import outcome_response
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.worker import Worker

log = logging.getLogger("gateway.http")


def _loc_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("query", "path", "header", "body"))


def create_app(settings: Settings, clients: ClientsConfig, *, with_worker: bool = False) -> FastAPI:
    """Build the app; Redis and (optionally) an in-process worker start in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set")
        redis = connect(settings.redis_url)
        app.state.services = Services.build(settings, clients, redis)
        stop = asyncio.Event()
        worker_task = None
        if with_worker:
            worker = Worker(redis, settings, clients)
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run(stop), name="worker")
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            await redis.aclose()

    app = FastAPI(
        title="FHIR gateway",
        version="0.1.0",
        summary="FHIR R4 edge for EHRs and a normalized API for the engagement platform.",
        lifespan=lifespan,
    )
    app.include_router(fhir_api.router)
    app.include_router(platform_api.router)

    @app.get("/healthz", tags=["Operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

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
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "route": getattr(route, "path", "unmatched"),
                    "type": rtype if (rtype := request.path_params.get("rtype")) in R4_RESOURCE_TYPES else None,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id.reset(token)

    return app
