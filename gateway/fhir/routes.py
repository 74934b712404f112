"""The FHIR R4 edge at ``/fhir/R4``: CRUD, history reads, search, conditional create, Bundles, $validate."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conformance.capability import capability_statement
from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, has_errors, operation_outcome
from conformance.validator import Support, validate_resource
from gateway.auth import Principal
from gateway.errors import BadRequest, InvalidResource, NotFound, UnsupportedMediaType
from gateway.fhir import bundle as bundles
from gateway.fhir.policy import accepts
from gateway.fhir.search import parse_query, run_search, search_params_for
from gateway.metrics import VALIDATION_FAILURES
from gateway.services import Services, ServicesDep
from gateway.store.connection import text
from gateway.store.store import Create, Delete, Result, Update
from gateway.web import openapi
from gateway.web.body import check_content_type, parse_json, read_limited
from gateway.web.responses import FhirResponse, base_url, http_date

# Every handler answers a Response itself: the default class only tells the OpenAPI document the media type.
router = APIRouter(
    prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse, responses=openapi.FHIR_ERRORS
)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def _principal(services: Services, request: Request) -> Principal:
    return services.auth.require(request.headers.get("authorization"), "ehr")


def _check_format(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt and fmt.lower() not in (
        "json",
        "application/json",
        "application/fhir+json",
        "application/json+fhir",
    ):
        raise UnsupportedMediaType("only JSON is served (_format=json)", expression="_format")


def _check_type(rtype: str) -> None:
    if rtype not in R4_RESOURCE_TYPES:
        raise NotFound(f"{rtype[:64]} is not an R4 resource type", expression="type")


def _check_id(rid: str) -> None:
    if not rid or len(rid) > 64 or not set(rid) <= _ID_CHARS:
        raise BadRequest("the id is not a valid FHIR id", expression="id")


async def _body(services: Services, request: Request) -> Any:
    check_content_type(request.headers.get("content-type"))
    raw = await read_limited(request.stream(), request.headers.get("content-length"), services.settings.max_body_bytes)
    return parse_json(raw, max_depth=services.settings.max_json_depth, max_string=services.settings.max_string_length)


def _validated(resource: Any, rtype: str, policy: str = "strict") -> tuple[dict[str, Any], list[Issue]]:
    """Return the resource and, when the tenant's lenient policy accepted it with errors, its issues."""
    if not isinstance(resource, dict):
        raise BadRequest("the body must be a FHIR resource (a JSON object)", expression="resourceType")
    if resource.get("resourceType") != rtype:
        raise BadRequest(f"resourceType must be {rtype}", expression="resourceType")
    issues = validate_resource(resource)
    if not accepts(policy, rtype, issues):
        VALIDATION_FAILURES.labels(rtype).inc()
        raise InvalidResource("the resource is not valid FHIR R4", issues=issues)
    return resource, issues if has_errors(issues) else []


def _policy(services: Services, principal: Principal) -> str:
    return services.clients.tenant(principal.tenant).validation


def _prefers_representation(request: Request, default: bool) -> bool:
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return False
    if "return=representation" in prefer:
        return True
    return default


def _written(result: Result, request: Request) -> Response:
    headers = {}
    if result.vid:
        headers["ETag"] = result.etag or ""
        headers["Location"] = f"{base_url(request)}/{result.location}"
        modified = http_date(result.last_updated or (result.resource or {}).get("meta", {}).get("lastUpdated"))
        if modified:
            headers["Last-Modified"] = modified
    if result.status == 204:
        return Response(status_code=204, headers=headers)
    if "return=OperationOutcome" in request.headers.get("prefer", ""):
        issues = result.issues or [Issue("information", "informational", None, f"{result.rtype}/{result.rid} stored")]
        return FhirResponse(operation_outcome(issues), status_code=result.status, headers=headers)
    if not _prefers_representation(request, True):
        return Response(status_code=result.status, headers=headers)
    return FhirResponse(result.resource, status_code=result.status, headers=headers)


def _read_response(resource: dict[str, Any]) -> FhirResponse:
    meta = resource.get("meta", {})
    headers = {"ETag": f'W/"{meta.get("versionId")}"'}
    modified = http_date(meta.get("lastUpdated"))
    if modified:
        headers["Last-Modified"] = modified
    return FhirResponse(resource, headers=headers)


async def searchset(
    services: Services, tenant: str, rtype: str, params: list[tuple[str, str]], base: str
) -> dict[str, Any]:
    """Run a search and return the searchset Bundle, with a ``next`` link when there is more."""
    settings = services.settings
    query = parse_query(params, settings.search_default_count, settings.search_max_count)
    hits = await run_search(services.redis, services.keys, tenant, rtype, query)
    resources = await services.store.read_many(tenant, rtype, hits.ids)
    self_params = [*query.echo, ("_count", str(query.count))]
    links = [{"relation": "self", "url": f"{base}/{rtype}?{urlencode(self_params)}"}]
    if hits.next_cursor:
        links.append(
            {
                "relation": "next",
                "url": f"{base}/{rtype}?{urlencode([*self_params, ('_cursor', hits.next_cursor)])}",
            }
        )
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
    ]
    if hits.issues:
        entries.append({"resource": operation_outcome(hits.issues), "search": {"mode": "outcome"}})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": hits.total,
        "link": links,
        "entry": entries,
    }


def served_routes() -> list[tuple[str, str]]:
    """Return (method, path below the FHIR base) for every route of the FHIR router."""
    served = []
    for route in router.routes:
        path = getattr(route, "path", "")
        if path.startswith(router.prefix) and path != f"{router.prefix}/metadata":
            served += [(m, path[len(router.prefix) :]) for m in getattr(route, "methods", ()) if m != "HEAD"]
    return served


@router.get("/metadata", summary="CapabilityStatement", **openapi.METADATA)
async def metadata(request: Request) -> FhirResponse:
    """Describe what this server really serves."""
    statement = capability_statement(base_url(request), served_routes(), sorted(R4_RESOURCE_TYPES), search_params_for)
    return FhirResponse(statement)


@router.post("", summary="Process a Bundle (transaction, batch, or an import)", **openapi.BUNDLE)
async def process_bundle(request: Request, services: ServicesDep) -> FhirResponse:
    """Take a transaction, batch, collection, searchset or history Bundle."""
    principal = _principal(services, request)
    _check_format(request)
    body = await _body(services, request)
    await services.queue.ensure_group(principal.tenant)
    answer = await bundles.process(
        services, principal.tenant, body, base_url(request), _prefers_representation(request, False)
    )
    return FhirResponse(answer)


@router.post("/{rtype}/$validate", summary="Validate a resource without storing it", **openapi.VALIDATE)
async def validate(rtype: openapi.ResourceType, request: Request, services: ServicesDep) -> FhirResponse:
    """Answer an OperationOutcome with every issue the validator finds."""
    principal = _principal(services, request)
    _check_type(rtype)
    body = await _body(services, request)
    profiles = list(request.query_params.getlist("profile"))
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        parameters = [p for p in body.get("parameter", []) if isinstance(p, dict)]
        for p in parameters:
            if p.get("name") == "profile":
                value = p.get("valueCanonical") or p.get("valueUri") or p.get("valueString")
                if isinstance(value, str):
                    profiles.append(value)
        body = next((p.get("resource") for p in parameters if p.get("name") == "resource"), None)
    if not isinstance(body, dict):
        raise BadRequest("$validate takes a resource, or Parameters with a 'resource' parameter", expression="resource")
    support = await _stored_support(services, principal.tenant, body, profiles)
    # A profile neither stored nor known is a warning from the validator, not an error.
    issues = validate_resource(body, support=support, profiles=profiles)
    return FhirResponse(operation_outcome(issues), status_code=400 if has_errors(issues) else 200)


async def _stored_support(
    services: Services, tenant: str, resource: dict[str, Any], profiles: list[str]
) -> Support | None:
    """Return the stored Questionnaire and StructureDefinitions a validation can use, by canonical URL."""
    wanted: list[tuple[str, str]] = [("StructureDefinition", url) for url in profiles]
    claimed = resource.get("meta", {}).get("profile") if isinstance(resource.get("meta"), dict) else None
    wanted += [("StructureDefinition", url) for url in claimed or [] if isinstance(url, str)]
    if resource.get("resourceType") == "QuestionnaireResponse" and isinstance(resource.get("questionnaire"), str):
        wanted.append(("Questionnaire", resource["questionnaire"]))
    found: list[dict[str, Any]] = []
    for rtype, url in wanted:
        ids = sorted(text(m) for m in await services.redis.smembers(services.keys.url_index(tenant, rtype, url)))
        if not ids and "|" in url:
            ids = sorted(
                text(m)
                for m in await services.redis.smembers(services.keys.url_index(tenant, rtype, url.split("|", 1)[0]))
            )
        found += await services.store.read_many(tenant, rtype, ids)
    return Support(found) if found else None


@router.post(
    "/{rtype}", summary="Create a resource (If-None-Exist for a conditional create)", status_code=201, **openapi.CREATE
)
async def create(
    rtype: openapi.ResourceType,
    request: Request,
    services: ServicesDep,
    if_none_exist: openapi.IfNoneExist = None,
) -> Response:
    """Create a resource; an identical create retried within the dedupe window answers with the first one."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_format(request)
    resource, issues = _validated(await _body(services, request), rtype, _policy(services, principal))
    await services.queue.ensure_group(principal.tenant)
    create = Create(rtype, resource, if_none_exist=if_none_exist, issues=issues)
    [result] = await services.store.apply(principal.tenant, [create])
    return _written(result, request)


@router.get("/{rtype}", summary="Search", **openapi.SEARCH)
async def search(rtype: openapi.ResourceType, request: Request, services: ServicesDep) -> FhirResponse:
    """Search by _id, identifier, patient and _lastUpdated, paged by _count."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_format(request)
    params = list(request.query_params.multi_items())
    return FhirResponse(await searchset(services, principal.tenant, rtype, params, base_url(request)))


@router.get("/{rtype}/{rid}", summary="Read the current version", **openapi.READ)
async def read(
    rtype: openapi.ResourceType, rid: openapi.ResourceId, request: Request, services: ServicesDep
) -> FhirResponse:
    """Return the current version; 404 if unknown, 410 if deleted."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_id(rid)
    return _read_response(await services.store.read(principal.tenant, rtype, rid))


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Read one version", **openapi.VREAD)
async def vread(
    rtype: openapi.ResourceType,
    rid: openapi.ResourceId,
    vid: openapi.VersionId,
    request: Request,
    services: ServicesDep,
) -> FhirResponse:
    """Return one version of a resource."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_id(rid)
    if not vid.isdigit():
        raise NotFound(f"{rtype}/{rid} has no version {vid[:20]}", expression="vid")
    return _read_response(await services.store.vread(principal.tenant, rtype, rid, int(vid)))


@router.put(
    "/{rtype}/{rid}", summary="Create or update a resource by id (If-Match for optimistic locking)", **openapi.UPDATE
)
async def update(
    rtype: openapi.ResourceType,
    rid: openapi.ResourceId,
    request: Request,
    services: ServicesDep,
    if_match: openapi.IfMatch = None,
) -> Response:
    """Create or update; content equal to the current version makes no new version."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_id(rid)
    _check_format(request)
    resource, issues = _validated(await _body(services, request), rtype, _policy(services, principal))
    if resource.get("id") not in (None, rid):
        raise BadRequest("the id in the body does not match the URL", expression=f"{rtype}.id")
    await services.queue.ensure_group(principal.tenant)
    version = bundles.etag_version(if_match)
    [result] = await services.store.apply(
        principal.tenant, [Update(rtype, rid, resource, if_match=version, issues=issues)]
    )
    return _written(result, request)


@router.delete("/{rtype}/{rid}", summary="Delete (leaves a tombstone)", **openapi.DELETE)
async def delete(
    rtype: openapi.ResourceType, rid: openapi.ResourceId, request: Request, services: ServicesDep
) -> Response:
    """Delete a resource; deleting an absent or deleted one is not an error."""
    principal = _principal(services, request)
    _check_type(rtype)
    _check_id(rid)
    await services.queue.ensure_group(principal.tenant)
    [result] = await services.store.apply(principal.tenant, [Delete(rtype, rid)])
    return _written(result, request)


def _condition(request: Request) -> str:
    query = request.url.query
    if not query:
        raise BadRequest("a conditional interaction needs a search, e.g. ?identifier=system|value", expression="url")
    return query


@router.put("/{rtype}", summary="Conditional update (?identifier=system|value)", **openapi.CONDITIONAL_UPDATE)
async def conditional_update(rtype: openapi.ResourceType, request: Request, services: ServicesDep) -> Response:
    """Update the one resource the condition matches, or create it when none does; 412 when several do."""
    principal = _principal(services, request)
    _check_type(rtype)
    condition = _condition(request)
    resource, issues = _validated(await _body(services, request), rtype, _policy(services, principal))
    await services.queue.ensure_group(principal.tenant)
    [result] = await services.store.apply(
        principal.tenant, [Update(rtype, "", resource, criteria=condition, issues=issues)]
    )
    return _written(result, request)


@router.delete("/{rtype}", summary="Conditional delete (?identifier=system|value)", **openapi.CONDITIONAL_DELETE)
async def conditional_delete(rtype: openapi.ResourceType, request: Request, services: ServicesDep) -> Response:
    """Delete the one resource the condition matches; 412 when several do."""
    principal = _principal(services, request)
    _check_type(rtype)
    condition = _condition(request)
    await services.queue.ensure_group(principal.tenant)
    [result] = await services.store.apply(principal.tenant, [Delete(rtype, "", criteria=condition)])
    return _written(result, request)
