"""How the FHIR routes answer a read and a write: the headers R4 asks for, and the body ``Prefer`` chooses."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from conformance.outcome import Issue, operation_outcome
from gateway import encoding
from gateway.fhir.requests import prefers_representation
from gateway.store import Result, compact
from gateway.web.responses import FhirResponse, base_url, http_date


def written(result: Result, request: Request) -> Response:
    """Answer a write: ETag, Location and Last-Modified, and the body the client's ``Prefer`` asks for."""
    headers = {}
    if result.vid:
        headers["ETag"] = result.etag or ""
        headers["Location"] = f"{base_url(request)}/{result.location}"
        modified = http_date(result.last_updated or (result.resource or {}).get("meta", {}).get("lastUpdated"))
        if modified:
            headers["Last-Modified"] = modified
    if result.status == 204:
        return Response(status_code=204, headers=headers)
    if result.outcome == "stale":  # nothing was written: say why rather than answer as if it had been
        return FhirResponse(operation_outcome(result.issues), status_code=200, headers=headers)
    if "return=OperationOutcome" in request.headers.get("prefer", ""):
        issues = result.issues or [Issue("information", "informational", None, f"{result.rtype}/{result.rid} stored")]
        return FhirResponse(operation_outcome(issues), status_code=result.status, headers=headers)
    if not prefers_representation(request, True):
        return Response(status_code=result.status, headers=headers)
    body = result.raw if result.raw is not None else result.resource  # the stored bytes, not written again
    return FhirResponse(body, status_code=result.status, headers=headers)


def read_response(resource: dict[str, Any]) -> FhirResponse:
    """Answer a read with the resource, its ETag and Last-Modified."""
    meta = resource.get("meta", {})
    return _read_answer(resource, meta.get("versionId"), meta.get("lastUpdated"))


def stored_response(raw: bytes) -> FhirResponse:
    """Answer a read with a stored version's bytes as they are; one in an older form is parsed and written again."""
    head = compact.head(raw)
    if head is None:
        return read_response(encoding.loads(raw))
    return _read_answer(raw, head.version_id, head.last_updated)


def _read_answer(body: dict[str, Any] | bytes, version_id: Any, last_updated: Any) -> FhirResponse:
    headers = {"ETag": f'W/"{version_id}"'}
    modified = http_date(last_updated)
    if modified:
        headers["Last-Modified"] = modified
    return FhirResponse(body, headers=headers)
