"""The access log: one line, the request counters and the latency histogram per answer, and ``X-Request-Id``.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which runs every request through an extra task
and memory streams): the answer's status is read from its start message, where the request id is also added.
Only ids and route templates are logged: never a path with its ids, a query or a body.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conformance.definitions import R4_RESOURCE_TYPES
from gateway.logs import request_id
from gateway.metrics import HTTP_REQUESTS, HTTP_SECONDS

log = logging.getLogger("gateway.app")


@functools.cache
def _series(method: str, template: str, status: int) -> tuple[Any, Any]:
    """Return the labelled request counter and duration histogram an answer counts in, looked up once per label set
    (``labels`` takes a lock and checks its arguments on every call): methods, route templates and statuses are few."""
    return HTTP_REQUESTS.labels(method, template, str(status)), HTTP_SECONDS.labels(template)


class AccessLog:
    """ASGI middleware: log and count every HTTP answer, and name it with the request's id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), None)
        rid = (given.decode("latin-1") if given else os.urandom(16).hex())[:64]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, named)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            requests, seconds = _series(scope["method"], template, status)
            requests.inc()
            seconds.observe(elapsed)
            rtype = (scope.get("path_params") or {}).get("rtype")
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": template,
                    "type": rtype if rtype in R4_RESOURCE_TYPES else None,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)
