"""What every FHIR route checks of a request: the type and id in the path, and the body (``gateway.web.negotiation``
checks ``_format`` and ``Accept`` for every route)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, has_errors
from conformance.validator import validate_resource
from gateway.errors import BadRequest, InvalidResource, NotFound, RequestTimeout, UnsupportedMediaType
from gateway.fhir.edge import Edge
from gateway.fhir.policy import accepts
from gateway.metrics import VALIDATION_FAILURES
from gateway.store import rejections
from gateway.web.body import check_content_type, parse_json, read_limited

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def check_type(rtype: str) -> None:
    """Refuse a path type that is not an R4 resource type (404)."""
    if rtype not in R4_RESOURCE_TYPES:
        raise NotFound("the path does not name an R4 resource type", expression="type")


def check_id(rid: str) -> None:
    """Refuse a path id that is not a FHIR id."""
    if not rid or len(rid) > 64 or not set(rid) <= _ID_CHARS:
        raise BadRequest("the id is not a valid FHIR id", expression="id")


@dataclass(frozen=True)
class Body:
    """A parsed request body and its size in bytes (a large one is validated off the event loop too)."""

    value: Any
    size: int


def _declared_size(request: Request) -> int | None:
    length = request.headers.get("content-length")
    return int(length) if length is not None and length.strip().isdigit() else None


async def read_raw(edge: Edge, request: Request, tenant: str | None) -> bytes:
    """Read a body within the size limit and the read timeout; a large one is refused first (503) when the
    gateway is busy with large bodies or the tenant's queue is full, before it is read or parsed."""
    settings = edge.settings
    declared = _declared_size(request)
    if declared is not None and edge.offload.large(declared) and declared <= settings.max_body_bytes:
        edge.offload.admit()
        if tenant is not None:
            await edge.store.check_backlog(tenant)
    try:
        async with asyncio.timeout(settings.body_read_timeout_seconds):
            raw = await read_limited(request.stream(), request.headers.get("content-length"), settings.max_body_bytes)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {settings.body_read_timeout_seconds:g} s (shorter than Content-Length?)"
        ) from None
    if declared is None and edge.offload.large(len(raw)):  # chunked: shed it now, still before it is parsed
        edge.offload.admit()
        if tenant is not None:
            await edge.store.check_backlog(tenant)
    return raw


async def read_body(edge: Edge, request: Request, tenant: str | None = None) -> Body:
    """Read and parse the JSON body within the configured limits (a large one in a worker thread)."""
    check_content_type(request.headers.get("content-type"))
    raw = await read_raw(edge, request, tenant)
    s = edge.settings
    value = await edge.offload.run(
        len(raw), functools.partial(parse_json, raw, max_depth=s.max_json_depth, max_string=s.max_string_length)
    )
    return Body(value, len(raw))


async def validated_body(edge: Edge, body: Body, rtype: str, tenant: str) -> tuple[dict[str, Any], list[Issue]]:
    """Validate a body as ``validated`` does, off the event loop when it is large."""
    policy = edge.policy(tenant)
    return await edge.offload.run(body.size, functools.partial(validated, body.value, rtype, policy))


def validated(resource: Any, rtype: str, policy: str = "strict") -> tuple[dict[str, Any], list[Issue]]:
    """Return the resource and, when the tenant's lenient policy accepted it with errors, its issues."""
    if not isinstance(resource, dict):
        raise BadRequest("the body must be a FHIR resource (a JSON object)", expression="resourceType")
    if resource.get("resourceType") != rtype:
        raise BadRequest(f"resourceType must be {rtype}", expression="resourceType")
    issues = validate_resource(resource)
    if not accepts(policy, rtype, issues):
        VALIDATION_FAILURES.labels(rtype).inc()
        rejections.note(rtype, issues)
        raise InvalidResource("the resource is not valid FHIR R4", issues=issues)
    return resource, issues if has_errors(issues) else []


async def read_form(edge: Edge, request: Request) -> list[tuple[str, str]]:
    """Read a form body (``application/x-www-form-urlencoded``, as ``POST [type]/_search`` sends) within limits."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    raw = await read_raw(edge, request, None)
    try:
        return parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form body is not URL-encoded ASCII") from None


def handling_strict(request: Request) -> bool:
    """Tell whether the client asked for unsupported search parameters to be errors (``Prefer: handling=strict``)."""
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


def ehr_source(request: Request) -> bool:
    """Tell whether the sender says the body is the EHR's own copy (``X-Ehr-Source: true``): its
    ``meta.lastUpdated`` then orders versions, and an older one than held is not applied."""
    return request.headers.get("x-ehr-source", "").strip().lower() == "true"


def prefers_representation(request: Request, default: bool) -> bool:
    """Tell whether the client's ``Prefer`` header asks for the resource in the answer."""
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return False
    if "return=representation" in prefer:
        return True
    return default
