"""The FHIR R4 edge at ``/fhir/R4``: create, read, vread, update, delete, conditional writes, search, Bundles.

``metadata`` (``capability``), ``$validate`` (``validate_op``), history (``history``) and PATCH (``patch``) have
routers of their own; ``ROUTERS`` lists them in the order the app must mount them (``/metadata`` and the
``_history`` paths before ``/{rtype}`` and ``/{rtype}/{rid}``, which would take them).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.deps import check_fhir, fhir_caller
from gateway.errors import BadRequest, NotFound
from gateway.fhir import bundle as bundles
from gateway.fhir import capability, history, patch, validate_op
from gateway.fhir.answers import stored_response, written
from gateway.fhir.entries import etag_version
from gateway.fhir.requests import (
    check_id,
    check_type,
    ehr_source,
    handling_strict,
    prefers_representation,
    read_body,
    read_form,
    validated_body,
)
from gateway.fhir.searchset import searchset
from gateway.identity.scopes import bundle_needs
from gateway.store import Create, Delete, Update
from gateway.web import openapi
from gateway.web.responses import FhirResponse, base_url
from gateway.web.routing import FhirRoute

# Every handler answers a Response itself: the default class only tells the OpenAPI document the media type.
PREFIX = capability.PREFIX  # the FHIR base
router = APIRouter(
    route_class=FhirRoute,
    prefix=PREFIX,
    tags=["FHIR R4"],
    default_response_class=FhirResponse,
    responses=openapi.FHIR_ERRORS,
)


def _condition(request: Request) -> str:
    query = request.url.query
    if not query:
        raise BadRequest("a conditional interaction needs a search, e.g. ?identifier=system|value", expression="url")
    return query


@router.post("", summary="Process a Bundle (transaction, batch, or an import)", **openapi.BUNDLE)
async def process_bundle(request: Request) -> FhirResponse:
    """Take a transaction, batch, collection, searchset or history Bundle."""
    services, principal = await fhir_caller(request)
    body = await read_body(services.edge, request, principal.tenant)
    if isinstance(body.value, dict):  # each entry needs its interaction's scope; one missing refuses the Bundle
        check_fhir(principal, bundle_needs(body.value))
    prefer = bundles.Prefer(
        representation=prefers_representation(request, False),
        outcome="return=OperationOutcome" in request.headers.get("prefer", ""),
    )
    answer = await bundles.process(
        services.edge, principal.tenant, body.value, base_url(request), prefer, ehr_ordered=ehr_source(request),
        size=body.size,
    )  # fmt: skip
    return FhirResponse(answer)


@router.post(
    "/{rtype}", summary="Create a resource (If-None-Exist for a conditional create)", status_code=201, **openapi.CREATE
)
async def create(
    rtype: openapi.ResourceType,
    request: Request,
    if_none_exist: openapi.IfNoneExist = None,
) -> Response:
    """Create a resource; an identical create retried within the dedupe window answers with the first one."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    if any(name not in ("_format", "_pretty") for name in request.query_params):
        # Conditional create is If-None-Exist; a search in the URL would be ignored and create a duplicate.
        raise BadRequest("create takes no search parameters; send the condition as If-None-Exist", expression="url")
    body = await read_body(services.edge, request, principal.tenant)
    resource, issues = await validated_body(services.edge, body, rtype, principal.tenant)
    create = Create(
        rtype, resource, if_none_exist=if_none_exist, issues=issues, dedupe=services.edge.dedupe(principal.tenant)
    )
    [result] = await services.store.apply(principal.tenant, [create])
    return written(result, request)


@router.get("/{rtype}", summary="Search", **openapi.SEARCH)
async def search(rtype: openapi.ResourceType, request: Request) -> FhirResponse:
    """Search by the parameters the CapabilityStatement lists for the type, paged by _count."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    params = list(request.query_params.multi_items())
    strict = handling_strict(request)
    bundle = await searchset(services.edge, principal.tenant, rtype, params, base_url(request), strict=strict)
    return FhirResponse(bundle)


@router.post("/{rtype}/_search", summary="Search with the parameters in a form body", **openapi.SEARCH_POST)
async def search_by_post(rtype: openapi.ResourceType, request: Request) -> FhirResponse:
    """Search as GET does, with parameters from the form body (application/x-www-form-urlencoded) and the URL."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    params = [*request.query_params.multi_items(), *await read_form(services.edge, request)]
    strict = handling_strict(request)
    bundle = await searchset(services.edge, principal.tenant, rtype, params, base_url(request), strict=strict)
    return FhirResponse(bundle)


@router.get("/{rtype}/{rid}", summary="Read the current version", **openapi.READ)
async def read(rtype: openapi.ResourceType, rid: openapi.ResourceId, request: Request) -> FhirResponse:
    """Return the current version; 404 if unknown, 410 if deleted."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    return stored_response(await services.store.read_json(principal.tenant, rtype, rid))


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Read one version", **openapi.VREAD)
async def vread(
    rtype: openapi.ResourceType,
    rid: openapi.ResourceId,
    vid: openapi.VersionId,
    request: Request,
) -> FhirResponse:
    """Return one version of a resource."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    if not vid.isdigit():
        raise NotFound(f"that {rtype} has no such version", expression="vid")
    return stored_response(await services.store.vread_json(principal.tenant, rtype, rid, int(vid)))


@router.put(
    "/{rtype}/{rid}", summary="Create or update a resource by id (If-Match for optimistic locking)", **openapi.UPDATE
)
async def update(
    rtype: openapi.ResourceType,
    rid: openapi.ResourceId,
    request: Request,
    if_match: openapi.IfMatch = None,
) -> Response:
    """Create or update; content equal to the current version makes no new version."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    body = await read_body(services.edge, request, principal.tenant)
    resource, issues = await validated_body(services.edge, body, rtype, principal.tenant)
    if resource.get("id") != rid:
        raise BadRequest("the body's id must be the id in the URL (R4 update)", expression=f"{rtype}.id")
    change = Update(
        rtype, rid, resource, if_match=etag_version(if_match), issues=issues, ehr_ordered=ehr_source(request)
    )
    [result] = await services.store.apply(principal.tenant, [change])
    return written(result, request)


@router.delete("/{rtype}/{rid}", summary="Delete (leaves a tombstone)", **openapi.DELETE)
async def delete(rtype: openapi.ResourceType, rid: openapi.ResourceId, request: Request) -> Response:
    """Delete a resource; deleting an absent or deleted one is not an error."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    [result] = await services.store.apply(principal.tenant, [Delete(rtype, rid)])
    return written(result, request)


@router.put("/{rtype}", summary="Conditional update (?identifier=system|value)", **openapi.CONDITIONAL_UPDATE)
async def conditional_update(rtype: openapi.ResourceType, request: Request) -> Response:
    """Update the one resource the condition matches, or create it when none does; 412 when several do."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    condition = _condition(request)
    body = await read_body(services.edge, request, principal.tenant)
    resource, issues = await validated_body(services.edge, body, rtype, principal.tenant)
    [result] = await services.store.apply(
        principal.tenant,
        [Update(rtype, "", resource, criteria=condition, issues=issues, ehr_ordered=ehr_source(request))],
    )
    return written(result, request)


@router.delete("/{rtype}", summary="Conditional delete (?identifier=system|value)", **openapi.CONDITIONAL_DELETE)
async def conditional_delete(rtype: openapi.ResourceType, request: Request) -> Response:
    """Delete the one resource the condition matches; 412 when several do."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    condition = _condition(request)
    [result] = await services.store.apply(principal.tenant, [Delete(rtype, "", criteria=condition)])
    return written(result, request)


ROUTERS = (capability.router, validate_op.router, history.router, patch.router, router)
