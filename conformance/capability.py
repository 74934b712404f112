"""Build the CapabilityStatement from what the server really serves (its route table), never by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

_SEARCH_TYPES = {"_id": "token", "identifier": "token", "patient": "reference", "_lastUpdated": "date"}
# (method, path suffix after the type) -> FHIR type-level interaction
_TYPE_INTERACTIONS = {
    ("GET", "/{rtype}/{rid}"): "read",
    ("GET", "/{rtype}/{rid}/_history/{vid}"): "vread",
    ("PUT", "/{rtype}/{rid}"): "update",
    ("DELETE", "/{rtype}/{rid}"): "delete",
    ("POST", "/{rtype}"): "create",
    ("GET", "/{rtype}"): "search-type",
}


def capability_statement(
    base: str,
    routes: Iterable[tuple[str, str]],
    resource_types: Sequence[str],
    search_params: Sequence[str] | Callable[[str], Sequence[str]],
    *,
    software: str = "fhir-gateway",
    version: str = "0.1.0",
) -> dict[str, Any]:
    """Return an R4 CapabilityStatement for ``routes`` (method, path relative to the FHIR base).

    ``search_params`` names the search parameters of every type, or gives them per type.
    """
    served = set(routes)
    type_interactions = [{"code": code} for key, code in _TYPE_INTERACTIONS.items() if key in served]
    system = []
    if ("POST", "") in served:
        system = [{"code": "transaction"}, {"code": "batch"}]
    operations = (
        [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
        if ("POST", "/{rtype}/$validate") in served
        else []
    )
    searchable = ("GET", "/{rtype}") in served
    conditional_create = ("POST", "/{rtype}") in served
    resources = []
    for rtype in resource_types:
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": type_interactions,
            "versioning": "versioned-update",
            "readHistory": ("GET", "/{rtype}/{rid}/_history/{vid}") in served,
            "updateCreate": ("PUT", "/{rtype}/{rid}") in served,
            "conditionalCreate": conditional_create,
            "conditionalUpdate": ("PUT", "/{rtype}") in served,
            "conditionalDelete": "single" if ("DELETE", "/{rtype}") in served else "not-supported",
        }
        if searchable:
            params = search_params(rtype) if callable(search_params) else search_params
            entry["searchParam"] = [{"name": p, "type": _SEARCH_TYPES.get(p, "string")} for p in params]
        if operations:
            entry["operation"] = operations
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "kind": "instance",
        "software": {"name": software, "version": version},
        "implementation": {"description": "FHIR R4 integration gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Bearer tokens: an 'ehr' client per tenant; the tenant comes from the token."
                },
                "resource": resources,
                "interaction": system,
            }
        ],
    }
