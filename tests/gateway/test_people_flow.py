"""Patients and providers pushed to /fhir/R4 reach the platform: change events and records by id."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gateway

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


def patient(rid: str, **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": rid,
        "meta": {"security": [PSY]},
        "identifier": [{"type": MR, "system": "urn:oid:1.2.3.4", "value": f"MRN-{rid}"}],
        "active": True,
        "name": [{"use": "official", "family": "Synthetic", "given": ["Pat"]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "mobile"}],
        "birthDate": "1990-04-02",
    }
    return resource | changes


async def _events(gateway: Gateway) -> list[dict[str, Any]]:
    await gateway.drain()
    events: list[dict[str, Any]] = (await gateway.platform("/changes")).json()["events"]
    return events


async def test_a_patient_is_created_then_merged_and_readable_by_id(gateway: Gateway) -> None:
    assert (await gateway.ehr("PUT", "/Patient/dup", json=patient("dup"))).status_code == 201
    await gateway.drain()
    merged = patient("dup", active=False, link=[{"other": {"reference": "Patient/keep"}, "type": "replaced-by"}])
    assert (await gateway.ehr("PUT", "/Patient/dup", json=merged)).status_code == 200

    events = await _events(gateway)
    assert [(e["type"], e["record_type"], e["record_id"]) for e in events] == [
        ("patient.created", "patient", "dup"),
        ("patient.merged", "patient", "dup"),
    ]
    assert events[1]["record"]["merged_into"] == {"reference": "Patient/keep", "display": None}
    record = (await gateway.platform("/patients/dup")).json()
    assert record["merged_into"]["reference"] == "Patient/keep"
    assert (record["mrn"], record["name"]["text"], record["active"]) == ("MRN-dup", "Pat Synthetic", False)
    assert record["source"]["fhir_url"] == "Patient/dup/_history/2"
    assert [(label["system"], label["code"]) for label in record["security"]] == [(PSY["system"], "PSY")]


async def test_a_patient_update_and_delete_reach_the_feed(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Patient/p2", json=patient("p2"))
    await gateway.drain()
    # A new version that changes only what the record does not carry tells the platform nothing.
    moved_house = await gateway.ehr("PUT", "/Patient/p2", json=patient("p2", address=[{"city": "Springfield"}]))
    assert moved_house.status_code == 200 and moved_house.headers["etag"] == 'W/"2"'
    await gateway.drain()
    await gateway.ehr("PUT", "/Patient/p2", json=patient("p2", telecom=[{"system": "sms", "value": "555-0101"}]))
    await gateway.drain()
    assert (await gateway.ehr("DELETE", "/Patient/p2")).status_code in (200, 204)

    events = await _events(gateway)
    assert [e["type"] for e in events] == ["patient.created", "patient.updated", "patient.deleted"]
    assert events[1]["record"]["telecom"] == [{"system": "sms", "value": "555-0101", "use": None, "rank": None}]
    record = (await gateway.platform("/patients/p2")).json()
    assert record["deleted"] is True and record["security"]


async def test_a_practitioner_and_a_role_sharing_an_id_are_two_records(gateway: Gateway) -> None:
    practitioner = {
        "resourceType": "Practitioner",
        "id": "c1",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        "name": [{"family": "Okafor", "given": ["Chidi"], "prefix": ["Dr"]}],
    }
    role = {
        "resourceType": "PractitionerRole",
        "id": "c1",
        "practitioner": {"reference": "Practitioner/c1"},
        "organization": {"reference": "Organization/clinic"},
        "specialty": [{"text": "Psychology"}],
        "location": [{"reference": "Location/main"}],
    }
    assert (await gateway.ehr("PUT", "/Practitioner/c1", json=practitioner)).status_code == 201
    assert (await gateway.ehr("PUT", "/PractitionerRole/c1", json=role)).status_code == 201
    await gateway.drain()
    moved = role | {"location": [{"reference": "Location/annex"}]}
    assert (await gateway.ehr("PUT", "/PractitionerRole/c1", json=moved)).status_code == 200

    events = await _events(gateway)
    assert [(e["type"], e["record_type"], e["record_id"]) for e in events] == [
        ("provider.created", "provider", "c1"),
        ("provider_role.created", "provider_role", "c1"),
        ("provider_role.updated", "provider_role", "c1"),
    ]
    provider = (await gateway.platform("/providers/c1")).json()
    assert (provider["npi"], provider["name"]["text"]) == ("1234567893", "Dr Chidi Okafor")
    held_role = (await gateway.platform("/provider-roles/c1")).json()
    assert held_role["practitioner"]["reference"] == "Practitioner/c1"
    assert held_role["locations"] == [{"reference": "Location/annex", "display": None}]
    assert held_role["specialties"] == [{"text": "Psychology", "codings": []}]
    assert (await gateway.platform("/providers/nobody")).status_code == 404


async def test_schema_publishes_patient_provider_and_role(gateway: Gateway) -> None:
    schemas = (await gateway.platform("/schema")).json()
    assert {"patient", "provider", "provider_role"} <= set(schemas)
    assert "merged_into" in schemas["patient"]["properties"]
    assert "npi" in schemas["provider"]["properties"]
    assert "specialties" in schemas["provider_role"]["properties"]
