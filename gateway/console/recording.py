"""Count each FHIR request's refused resources for the tenant that sent them (the validation-failures page).

An ASGI middleware around the app: for a request under ``/fhir/`` it opens a ``gateway.store.rejections`` tally,
and when the answer starts it writes what the validation noted under the tenant of the request's token, before
the client sees the answer. A request with no known token noted nothing (the edge refuses it before reading the
body). A failure to write the counts is logged and never changes the answer.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.sources import Sources
from gateway.errors import Unauthorized
from gateway.store import rejections

log = logging.getLogger("gateway.console")


class RecordRejections:
    """Write each FHIR request's tally of refused resources to its tenant's counts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/fhir/"):
            await self.app(scope, receive, send)
            return
        with rejections.tally() as noted:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start" and noted:
                    await _flush(scope, noted)
                    noted.resources.clear()
                    noted.issues.clear()
                await send(message)

            await self.app(scope, receive, sending)


async def _flush(scope: Scope, noted: rejections.Tally) -> None:
    services: Sources | None = getattr(scope["app"].state, "services", None)
    if services is None:
        return
    authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
    try:
        tenant = (await services.auth.resolve(authorization)).tenant  # a static token or an access token
        await rejections.flush(services.redis, services.keys, tenant, noted, services.clock())
    except Unauthorized:
        return
    except (RedisError, OSError) as exc:
        log.warning("validation failures not recorded", extra={"error": type(exc).__name__})
