"""History: ``[type]/[id]/_history``, ``[type]/_history`` and ``_history`` as ``history`` Bundles, newest first.

Each entry is one version: the resource (none for a deletion), ``request`` (POST for a first version, PUT for a
later one, DELETE for a deletion) and ``response`` (status, ETag, when it was written). Parameters: ``_count``,
``_since`` (versions written at or after an instant) and ``_cursor`` (the next page, from a ``next`` link); any
other is ignored and left out of the ``self`` link, or refused with ``Prefer: handling=strict``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request

from gateway.clock import instant
from gateway.deps import FhirCaller, fhir_caller
from gateway.errors import BadRequest, NotFound
from gateway.fhir.requests import check_id, check_type, handling_strict
from gateway.settings import Settings
from gateway.store import compact, history
from gateway.store.indexing import date_range
from gateway.web import openapi
from gateway.web.responses import FhirResponse, base_url
from gateway.web.routing import FhirRoute

router = APIRouter(route_class=FhirRoute, prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse)
_METHOD_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


class _Params:
    """The history parameters of a request."""

    def __init__(self, request: Request, settings: Settings) -> None:
        self.count = settings.search_default_count
        self.since_ms: float | None = None
        self.cursor: str | None = None
        self.echo: list[tuple[str, str]] = []
        for name, value in request.query_params.multi_items():
            if name == "_count":
                if not value.isdigit():
                    raise BadRequest("_count must be a non-negative integer", expression="_count")
                self.count = min(int(value), settings.search_max_count)
            elif name == "_since":
                span = date_range(value)
                if span is None:
                    raise BadRequest("_since must be a FHIR instant", expression="_since")
                self.since_ms = span[0]
                self.echo.append((name, value))
            elif name == "_cursor":
                self.cursor = value
            elif name not in ("_format", "_pretty") and handling_strict(request):
                raise BadRequest(f"{name} is not a history parameter the gateway serves", expression=name)

    def links(self, url: str, after: str | None) -> list[dict[str, str]]:
        self_params = [*self.echo, ("_count", str(self.count))]
        cursor = [("_cursor", self.cursor)] if self.cursor else []
        links = [{"relation": "self", "url": f"{url}?{urlencode([*self_params, *cursor])}"}]
        if after is not None:
            links.append({"relation": "next", "url": f"{url}?{urlencode([*self_params, ('_cursor', after)])}"})
        return links


def _entries(versions: list[history.Version], base: str) -> list[dict[str, Any]]:
    """Return the Bundle's entries: the stored bytes spliced in as they are when every version is in the compact
    form; else every one parsed and written again (one Bundle, one way of writing), as reads do."""
    bodies = [v.body for v in versions if v.body is not None]
    if all(compact.is_compact(body) for body in bodies):
        return [_entry(v, base, orjson.Fragment(v.body) if v.body is not None else None) for v in versions]
    return [_entry(v, base, v.resource) for v in versions]


def _entry(version: history.Version, base: str, resource: Any) -> dict[str, Any]:
    method = "DELETE" if resource is None else ("POST" if version.vid == 1 else "PUT")
    url = version.rtype if method == "POST" else f"{version.rtype}/{version.rid}"
    response = {"status": _METHOD_STATUS[method], "etag": f'W/"{version.vid}"'}
    if version.written_ms:
        response["lastModified"] = instant(version.written_ms / 1000)
    entry: dict[str, Any] = {"fullUrl": f"{base}/{version.rtype}/{version.rid}"}
    if resource is not None:
        entry["resource"] = resource
    entry["request"] = {"method": method, "url": url}
    entry["response"] = response
    return entry


def _bundle(total: int, links: list[dict[str, str]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


async def _recent(request: Request, caller: FhirCaller, rtype: str | None) -> FhirResponse:
    """Answer the history of a type, or with ``rtype`` None of every type."""
    services, tenant = caller.services, caller.principal.tenant
    p = _Params(request, services.settings)
    page = await history.recent(services.redis, services.keys, tenant, rtype, p.since_ms, p.cursor, p.count)
    base = base_url(request)
    url = f"{base}/{rtype}/_history" if rtype else f"{base}/_history"
    return FhirResponse(_bundle(page.total, p.links(url, page.after), _entries(page.versions, base)))


@router.get("/_history", summary="History of every resource", **openapi.HISTORY)
async def system_history(request: Request) -> FhirResponse:
    """List every version the tenant holds, newest first."""
    return await _recent(request, await fhir_caller(request), None)


@router.get("/{rtype}/_history", summary="History of a type", **openapi.HISTORY)
async def type_history(rtype: openapi.ResourceType, request: Request) -> FhirResponse:
    """List every version of every resource of a type, newest first."""
    caller = await fhir_caller(request)
    check_type(rtype)
    return await _recent(request, caller, rtype)


@router.get("/{rtype}/{rid}/_history", summary="History of one resource", **openapi.HISTORY)
async def instance_history(rtype: openapi.ResourceType, rid: openapi.ResourceId, request: Request) -> FhirResponse:
    """List every version of one resource, newest first (deletions included)."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    p = _Params(request, services.settings)
    versions = await history.of_resource(services.redis, services.keys, principal.tenant, rtype, rid)
    if not versions:
        raise NotFound(f"no {rtype} has that id", expression=rtype)
    if p.since_ms is not None:
        versions = [v for v in versions if v.written_ms >= p.since_ms]
    total = len(versions)
    if p.cursor is not None:
        if not p.cursor.isdigit():
            raise BadRequest("_cursor is not one this gateway issued", expression="_cursor")
        versions = [v for v in versions if v.vid < int(p.cursor)]
    page, more = versions[: p.count], len(versions) > p.count
    base = base_url(request)
    links = p.links(f"{base}/{rtype}/{rid}/_history", str(page[-1].vid) if more and page else None)
    return FhirResponse(_bundle(total, links, _entries(page, base)))
