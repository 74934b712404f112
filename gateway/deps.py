"""FastAPI dependencies: the services of the app, and the caller as an EHR or a platform client."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Principal
from gateway.services import Services
from gateway.settings import Role
from gateway.store import audit


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _caller(request: Request, services: Services, role: Role) -> Principal:
    """Return the caller if it may use the API of ``role`` and is within its rate limit."""
    authorization = request.headers.get("authorization")
    principal = services.auth.authenticate(authorization)
    trail = audit.current.get()
    if trail is not None:  # the audit trail's "who", also when the request is refused below
        trail.client, trail.tenant = principal.client, principal.tenant
    principal = services.auth.require(authorization, role)
    await services.limiter.take(principal.tenant, principal.client)
    return principal


async def _ehr(request: Request, services: ServicesDep) -> Principal:
    return await _caller(request, services, "ehr")


async def _platform(request: Request, services: ServicesDep) -> Principal:
    return await _caller(request, services, "platform")


EhrPrincipal = Annotated[Principal, Depends(_ehr)]
"""The calling EHR client (401 without a known token, 403 for another role, 429 over its rate limit)."""
PlatformPrincipal = Annotated[Principal, Depends(_platform)]
"""The calling platform client (401 without a known token, 403 for another role, 429 over its rate limit)."""
