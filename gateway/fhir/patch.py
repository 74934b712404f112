"""``PATCH [type]/[id]``: change part of a resource, validated and stored as an update is.

The body is a JSON Patch (RFC 6902, ``application/json-patch+json``), the format R4 names (http.html, patch), or a
JSON Merge Patch (RFC 7386, ``application/merge-patch+json``, or an object sent as JSON, as fhirpy's ``patch``
does). The patch is applied to the current version; the result must keep its type and id, is validated under the
tenant's policy (422 with every issue when it is not valid FHIR) and is stored only if that version is still the
current one, so a concurrent update is never overwritten: without ``If-Match`` the patch is applied again to the
newer version; with ``If-Match`` naming another version it is 412. A patch that cannot be applied (a ``test`` that
fails, a path that does not exist) is 422; a body that is not a patch is 400.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.deps import fhir_caller
from gateway.errors import BadRequest, InvalidResource, PreconditionFailed, Unprocessable, UnsupportedMediaType
from gateway.fhir.answers import written
from gateway.fhir.entries import etag_version
from gateway.fhir.requests import check_id, check_type, read_raw, validated
from gateway.store import Update
from gateway.web import openapi
from gateway.web.body import parse_json
from gateway.web.responses import FhirResponse
from gateway.web.routing import FhirRoute

router = APIRouter(route_class=FhirRoute, prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse)
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
_MERGE_AS_JSON = ("application/json", "application/fhir+json")
_ATTEMPTS = 5


def merge(target: Any, patch: Any) -> Any:
    """Apply a JSON Merge Patch (RFC 7386): objects merge, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def patched(current: dict[str, Any], media: str, body: Any) -> dict[str, Any]:
    """Return ``current`` with the patch applied, or raise BadRequest / Unprocessable."""
    if media == JSON_PATCH:
        if not isinstance(body, list):
            raise BadRequest("a JSON Patch is an array of operations", expression="patch")
        try:
            result = jsonpatch.JsonPatch(body).apply(current)
        except jsonpatch.InvalidJsonPatch as exc:
            raise BadRequest(f"the JSON Patch is not valid: {_why(exc)}", expression="patch") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise Unprocessable(f"the JSON Patch cannot be applied: {_why(exc)}", expression="patch") from None
    else:
        if not isinstance(body, dict):
            raise BadRequest("a JSON Merge Patch is an object", expression="patch")
        result = merge(current, body)
    if not isinstance(result, dict):
        raise Unprocessable("the patch does not leave a resource", expression="patch")
    return result


def _why(exc: Exception) -> str:
    # jsonpatch's messages name operations and paths, never values; keep the first line, short.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@router.patch("/{rtype}/{rid}", summary="Patch a resource (JSON Patch; If-Match for locking)", **openapi.PATCH)
async def patch(
    rtype: openapi.ResourceType,
    rid: openapi.ResourceId,
    request: Request,
    if_match: openapi.IfMatch = None,
) -> Response:
    """Apply a patch to the current version and store the result as a new version."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    check_id(rid)
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media not in (JSON_PATCH, MERGE_PATCH, *_MERGE_AS_JSON):
        raise UnsupportedMediaType(f"PATCH takes {JSON_PATCH} (or {MERGE_PATCH})")
    settings = services.settings
    raw = await read_raw(services.edge, request, principal.tenant)
    body = parse_json(raw, max_depth=settings.max_json_depth, max_string=settings.max_string_length)
    wanted = etag_version(if_match)
    tenant = principal.tenant
    for _ in range(_ATTEMPTS):
        current = await services.store.read(tenant, rtype, rid)
        version = current["meta"]["versionId"]
        if wanted is not None and wanted != version:
            raise PreconditionFailed(f"If-Match {wanted} is not the current version of {rtype}/{rid}", expression=rtype)
        result = patched(current, media, body)
        if result.get("resourceType") != rtype or result.get("id") != rid:
            raise Unprocessable("a patch may not change the resource's type or id", expression=f"{rtype}.id")
        meta = result.get("meta")
        if isinstance(meta, dict):  # the gateway's own version stamp is not the content's
            result["meta"] = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
            if not result["meta"]:
                del result["meta"]
        try:
            resource, issues = validated(result, rtype, services.edge.policy(tenant))
        except InvalidResource as exc:
            raise InvalidResource("the patched resource is not valid FHIR R4", issues=exc.issues, status=422) from None
        try:
            change = Update(rtype, rid, resource, if_match=version, issues=issues)
            [stored] = await services.store.apply(tenant, [change])
        except PreconditionFailed:
            if wanted is not None:
                raise
            continue  # another update came first: patch the newer version
        return written(stored, request)
    raise PreconditionFailed(f"{rtype}/{rid} kept changing; retry the patch", expression=rtype)
