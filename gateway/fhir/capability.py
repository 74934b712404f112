"""``GET /fhir/R4/metadata``: the CapabilityStatement, built from the FHIR operations the app really serves (its
OpenAPI document, which FastAPI derives from the mounted routes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request

from conformance.capability import capability_statement
from conformance.definitions import R4_RESOURCE_TYPES
from gateway import encoding
from gateway.deps import services_of
from gateway.identity.smart import security, token_url
from gateway.store.parameters import indexed
from gateway.web import openapi
from gateway.web.responses import FhirResponse, base_url
from gateway.web.routing import FhirRoute

PREFIX = "/fhir/R4"
_METHODS = ("get", "post", "put", "patch", "delete")
router = APIRouter(route_class=FhirRoute, prefix=PREFIX, tags=["FHIR R4"], default_response_class=FhirResponse)


def search_params(rtype: str) -> list[tuple[str, str]]:
    """Return (name, search type) of every search parameter served for ``rtype``."""
    served = [("_id", "token"), ("_lastUpdated", "date")]
    return served + sorted((name, p.type) for name, p in indexed(rtype).items())


def served_routes(paths: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Return (method, path below the FHIR base) for every FHIR operation of an OpenAPI ``paths`` object."""
    served = []
    for path, operations in paths.items():
        if (path.startswith(f"{PREFIX}/") or path == PREFIX) and path != f"{PREFIX}/metadata":
            served += [(method.upper(), path[len(PREFIX) :]) for method in operations if method in _METHODS]
    return served


# Statements written, by (FHIR base, token URL): the same for every request to one address, and 0.9 ms of CPU to
# build. A few addresses reach a gateway (its service name, its ingress host); a client choosing its Host header
# could name many, so past this many the oldest is dropped.
_KEPT = 16


@router.get("/metadata", summary="CapabilityStatement", **openapi.METADATA)
async def metadata(request: Request) -> FhirResponse:
    """Describe what this server really serves, and how to get a token (SMART ``rest.security``)."""
    services = services_of(request)
    base, token = base_url(request), token_url(services.settings.public_base_url, str(request.base_url))
    written: dict[tuple[str, str], bytes] | None = getattr(request.app.state, "capability_statements", None)
    if written is None:
        written = request.app.state.capability_statements = {}
    body = written.get((base, token))
    if body is None:
        served = served_routes(request.app.openapi()["paths"])
        statement = capability_statement(base, served, sorted(R4_RESOURCE_TYPES), search_params)
        for rest in statement.get("rest", []):
            rest["security"] = security(token)
        body = written[(base, token)] = encoding.dumps(statement)
        while len(written) > _KEPT:
            del written[next(iter(written))]
    return FhirResponse(body)
