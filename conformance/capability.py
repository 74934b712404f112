"""Build the CapabilityStatement from what the server really serves (its route table), never by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

# (method, path suffix after the type) -> FHIR type-level interaction
_TYPE_INTERACTIONS = {
    ("GET", "/{rtype}/{rid}"): "read",
    ("GET", "/{rtype}/{rid}/_history/{vid}"): "vread",
    ("PUT", "/{rtype}/{rid}"): "update",
    ("DELETE", "/{rtype}/{rid}"): "delete",
    ("POST", "/{rtype}"): "create",
    ("GET", "/{rtype}"): "search-type",
    ("PATCH", "/{rtype}/{rid}"): "patch",
    ("GET", "/{rtype}/{rid}/_history"): "history-instance",
    ("GET", "/{rtype}/_history"): "history-type",
}


def capability_statement(
    base: str,
    routes: Iterable[tuple[str, str]],
    resource_types: Sequence[str],
    search_params: Callable[[str], Sequence[tuple[str, str]]],
    *,
    software: str = "fhir-gateway",
    version: str = "0.1.0",
) -> dict[str, Any]:
    """Return an R4 CapabilityStatement for ``routes`` (method, path relative to the FHIR base).

    ``search_params`` gives each type's search parameters as (name, search type).
    """
    served = set(routes)
    type_interactions = [{"code": code} for key, code in _TYPE_INTERACTIONS.items() if key in served]
    system = []
    if ("POST", "") in served:
        system = [{"code": "transaction"}, {"code": "batch"}]
    if ("GET", "/_history") in served:
        system.append({"code": "history-system"})
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
            entry["searchParam"] = [{"name": name, "type": kind} for name, kind in search_params(rtype)]
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
