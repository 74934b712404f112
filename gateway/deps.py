"""FastAPI dependencies: the services of the app, and the caller as an EHR or a platform client.

The caller is found from its bearer token (a static token or an access token); what it may do is its scopes
(``gateway.identity.scopes``): a FHIR route needs ``system/<Type>.<letter>`` for its interaction, a platform route
its ``platform/`` scope. A request outside them is 403 naming the scope it needs.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from gateway.auth import Principal
from gateway.errors import Forbidden
from gateway.identity import scopes
from gateway.services import Services
from gateway.store import audit


async def _services(request: Request) -> Services:
    # A coroutine, as every dependency: FastAPI runs a plain function in its thread pool, a thread hop per request.
    return services_of(request)


def services_of(request: Request) -> Services:
    """Return the app's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


def _template(request: Request) -> str:
    """Return the FHIR route's path template below the base (the FHIR routers carry the prefix themselves)."""
    return str(getattr(request.scope.get("route"), "path", "")).removeprefix("/fhir/R4")


def needs_scope(scope: str) -> Forbidden:
    """Return the 403 for a request that needs ``scope``."""
    return Forbidden(f"this request needs the scope {scope}")


async def _caller(request: Request, services: Services) -> Principal:
    """Return the caller its token names (401 if none), recorded as the audit trail's "who" (so a refusal below is
    recorded against it too), once it is within its rate limit (429 past it)."""
    principal = await services.auth.resolve(request.headers.get("authorization"))
    trail = audit.current.get()
    if trail is not None:
        trail.client, trail.tenant = principal.client, principal.tenant
    await services.limiter.take(principal.tenant, principal.client)
    return principal


class FhirCaller(NamedTuple):
    """What a FHIR handler works with: the app's services and the calling client."""

    services: Services
    principal: Principal


async def fhir_caller(request: Request) -> FhirCaller:
    """Return the services and the calling FHIR client: 401 without a known token, 403 without the interaction's
    scope, 429 past its rate.

    The FHIR handlers call this first rather than declaring it as a dependency: FastAPI solves each declared
    dependency on every request (its cache key and scopes worked out again), 50-60 us, which was 5-8% of the CPU
    of a single-resource write. ``gateway.app`` declares their bearer token in the OpenAPI document.
    """
    services = services_of(request)
    return FhirCaller(services, await _ehr(request, services))


async def _ehr(request: Request, services: Services) -> Principal:
    principal = await _caller(request, services)
    rtype = str(request.path_params.get("rtype", "*"))
    letter = scopes.fhir_letter(request.method, _template(request))
    if letter is not None:
        missing = scopes.missing_fhir(principal.scopes, [(rtype, letter)])
    else:  # a Bundle (its entries are checked by check_fhir) or $validate: any FHIR scope for the type
        fhir = [s for s in map(scopes.parse_fhir, principal.scopes) if s is not None]
        held = [s for s in fhir if s.rtype in ("*", rtype)] if "rtype" in request.path_params else fhir
        missing = None if held else f"system/{rtype}.c"
    if missing is not None:
        raise needs_scope(missing)
    return principal


def check_fhir(principal: Principal, needs: set[tuple[str, str]]) -> None:
    """Raise 403 unless ``principal`` holds every (type, letter) in ``needs``."""
    missing = scopes.missing_fhir(principal.scopes, needs)
    if missing is not None:
        raise needs_scope(missing)


async def _platform(request: Request, services: ServicesDep) -> Principal:
    principal = await _caller(request, services)
    needed = scopes.platform_scope(request.method, request.url.path)
    if needed is not None and needed not in principal.scopes:
        raise needs_scope(needed)
    return principal


PlatformPrincipal = Annotated[Principal, Depends(_platform)]
"""The calling platform client (401 without a known token, 403 without the route's scope, 429 past its rate)."""
