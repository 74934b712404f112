"""``POST /fhir/R4/{type}/$validate``: validate a resource without storing it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from conformance.outcome import has_errors, operation_outcome
from conformance.validator import Support, validate_resource
from gateway.deps import fhir_caller
from gateway.errors import BadRequest
from gateway.fhir.requests import check_type, read_body
from gateway.store import Store
from gateway.web import openapi
from gateway.web.responses import FhirResponse
from gateway.web.routing import FhirRoute

router = APIRouter(route_class=FhirRoute, prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse)


@router.post("/{rtype}/$validate", summary="Validate a resource without storing it", **openapi.VALIDATE)
async def validate(rtype: openapi.ResourceType, request: Request) -> FhirResponse:
    """Answer an OperationOutcome with every issue the validator finds."""
    services, principal = await fhir_caller(request)
    check_type(rtype)
    body = (await read_body(services.edge, request)).value
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
    support = await stored_support(services.store, principal.tenant, body, profiles)
    # A profile neither stored nor known is a warning from the validator, not an error.
    issues = validate_resource(body, support=support, profiles=profiles)
    return FhirResponse(operation_outcome(issues), status_code=400 if has_errors(issues) else 200)


async def stored_support(store: Store, tenant: str, resource: dict[str, Any], profiles: list[str]) -> Support | None:
    """Return the stored Questionnaire and StructureDefinitions a validation can use, by canonical URL."""
    wanted: list[tuple[str, str]] = [("StructureDefinition", url) for url in profiles]
    claimed = resource.get("meta", {}).get("profile") if isinstance(resource.get("meta"), dict) else None
    wanted += [("StructureDefinition", url) for url in claimed or [] if isinstance(url, str)]
    if resource.get("resourceType") == "QuestionnaireResponse" and isinstance(resource.get("questionnaire"), str):
        wanted.append(("Questionnaire", resource["questionnaire"]))
    found: list[dict[str, Any]] = []
    for rtype, url in wanted:
        found += await store.by_canonical(tenant, rtype, url)
    return Support(found) if found else None
