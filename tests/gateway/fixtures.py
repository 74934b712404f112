"""Synthetic FHIR payloads for tests (no real patient data)."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import corpus_dir

APPOINTMENT: dict[str, Any] = {
    "resourceType": "Appointment",
    "identifier": [{"system": "urn:oid:1.2.3.4", "value": "appt-1"}],
    "status": "booked",
    "description": "Follow-up visit",
    "start": "2026-12-10T09:00:00-05:00",
    "end": "2026-12-10T09:30:00-05:00",
    "participant": [
        {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"},
    ],
}


def appointment(**changes: Any) -> dict[str, Any]:
    """Return a copy of the synthetic appointment with ``changes`` applied."""
    result = copy.deepcopy(APPOINTMENT)
    result.update(changes)
    return result


def hl7_appointment() -> dict[str, Any]:
    """Return the HL7 R4 example Appointment from the corpus."""
    path = corpus_dir() / "hl7-r4-spec-examples" / "Appointment-example.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    """Return a transaction Bundle of ``entries``."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    """Return a transaction entry that POSTs ``resource``."""
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def next_path(bundle: dict[str, Any]) -> str:
    """Return the path and query of a Bundle's ``next`` link below the FHIR base ("" when there is none)."""
    found = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    if not found:
        return ""
    parts = urlsplit(found[0])
    return parts.path.removeprefix("/fhir/R4") + "?" + parts.query


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a transaction entry that PUTs ``resource`` at its id."""
    return {
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }
