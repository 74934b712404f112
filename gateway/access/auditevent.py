"""An audit entry as a FHIR R4 AuditEvent (what ``fhir-gateway audit export`` writes).

type: ``rest`` (audit-event-type); subtype: the restful-interaction code, or for the platform API's own interactions
the nearest one (a record read is ``read``, a record query or feed read ``search-type``, a write-back ``create``
or ``update``); action C/R/U/D/E; outcome 0 (success), 4 (refused: the client's error), 8 (the gateway failed);
agent: the client (``who``) and its address; source: the gateway, site the tenant; entity: ``Type/id/_history/v``
and the patient. Nothing else: no content, no parameter values (a search's parameter names are an entity detail).
"""

from __future__ import annotations

from typing import Any

from gateway.clock import instant

_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_PLATFORM = {
    "platform-read": "read", "platform-search": "search-type", "feed-read": "search-type", "audit-read": "search-type",
    "platform-write": "update", "writeback": "create",
}  # fmt: skip
_ACTION = {
    "create": "C", "read": "R", "vread": "R", "search-type": "E", "search-system": "E", "history-instance": "R",
    "history-type": "R", "history-system": "R", "update": "U", "patch": "U", "delete": "D", "transaction": "E",
    "batch": "E", "operation": "E", "capabilities": "R",
}  # fmt: skip
_RESTFUL = frozenset(_ACTION) | {"history"}
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_CLIENT_SYSTEM = "urn:fhir-gateway:client"
_WRITEBACK_SYSTEM = "urn:fhir-gateway:writeback"


def outcome_code(status: int) -> str:
    """Return the AuditEvent outcome of an HTTP status: 0 success, 4 refused (4xx), 8 the gateway failed (5xx)."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(entry: dict[str, Any]) -> dict[str, Any]:
    """Return the R4 AuditEvent of one audit entry (as ``AuditTrail.entries`` answers it)."""
    interaction = str(entry.get("interaction") or "operation")
    code = _PLATFORM.get(interaction, interaction if interaction in _RESTFUL else "operation")
    status = int(entry.get("outcome") or 0)
    at = entry.get("at")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry["entry_id"]),
        "type": {"system": _EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": _INTERACTION, "code": code}],
        "action": _ACTION.get(code, "E"),
        "recorded": instant(int(at) / 1000) if at else entry.get("recorded"),
        "outcome": outcome_code(status),
        "outcomeDesc": f"HTTP {status} ({interaction})",
        "agent": [
            {
                "who": {"identifier": {"system": _CLIENT_SYSTEM, "value": entry.get("client") or "unknown"}},
                "requestor": True,
                **(
                    {"network": {"address": entry["source"], "type": "2"}} if entry.get("source") else {}
                ),  # type 2: an IP address
            }
        ],
        "source": {
            "site": entry.get("tenant") or "unknown",
            "observer": {"display": "fhir-gateway"},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    entities: list[dict[str, Any]] = []
    if entry.get("type") and entry.get("id"):
        what = f"{entry['type']}/{entry['id']}" + (f"/_history/{entry['vid']}" if entry.get("vid") else "")
        entities.append({"what": {"reference": what}, "type": _entity_type("2", "System Object")})
    elif entry.get("type"):
        entities.append({"what": {"display": str(entry["type"])}, "type": _entity_type("2", "System Object")})
    if entry.get("writeback"):
        entities.append(
            {
                "what": {"identifier": {"system": _WRITEBACK_SYSTEM, "value": entry["writeback"]}},
                "type": _entity_type("2", "System Object"),
            }
        )
    if entry.get("patient"):
        entities.append({"what": {"reference": entry["patient"]}, "type": _entity_type("1", "Person")})
    if entry.get("params"):
        # The names of the search parameters, never their values (a value may be a name or a birth date).
        detail = [{"type": "parameter-names", "valueString": entry["params"]}]
        entities.append({"what": {"display": "query"}, "type": _entity_type("2", "System Object"), "detail": detail})
    if entities:
        event["entity"] = entities
    return event


def _entity_type(code: str, display: str) -> dict[str, str]:
    return {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": code, "display": display}
