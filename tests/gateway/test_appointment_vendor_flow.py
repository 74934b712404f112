"""A tenant's vendor decides how its appointments read: the same push, two tenants, two vendors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.settings import ClientsConfig
from tests.conftest import CLIENTS, EHR_B, PLATFORM_B, Gateway
from tests.gateway.fixtures import appointment

CERNER = "https://fhir-ehr.cerner.com/r4/StructureDefinition"
PATIENT_LINK = "https://vmr.example.test/join/patient-5d1"
PROVIDER_LINK = "https://vmr.example.test/host/provider-8e0"


@pytest.fixture
def clients() -> ClientsConfig:
    """Tenant A is an Oracle Health site, tenant B a generic FHIR R4 one."""
    config: dict[str, Any] = copy.deepcopy(CLIENTS)
    config["tenants"] = {
        "clinic-a": {"vendor": "oracle-health", "timezone": "America/New_York"},
        "clinic-b": {"vendor": "generic", "timezone": "America/New_York"},
    }
    return ClientsConfig.model_validate(config)


def video_visit(patient_link: str = PATIENT_LINK) -> dict[str, Any]:
    """Return a synthetic Oracle Health Video Visit shaped like fhir.cerner.com's read example."""
    rooms = [
        {
            "resourceType": "HealthcareService",
            "id": "28",
            "type": [{"text": "Patient Virtual Meeting Room"}],
            "telecom": [{"system": "url", "value": patient_link}],
        },
        {
            "resourceType": "HealthcareService",
            "id": "31",
            "type": [{"text": "Provider Virtual Meeting Room"}],
            "telecom": [{"system": "url", "value": PROVIDER_LINK}],
        },
    ]
    resource = appointment(
        id="vv-1",
        contained=rooms,
        extension=[
            {"url": f"{CERNER}/is-cancelable", "valueBoolean": True},
            {"url": f"{CERNER}/is-reschedulable", "valueBoolean": False},
        ],
    )
    resource["participant"] += [
        {"type": [{"text": "Patient Virtual Meeting Room"}], "actor": {"reference": "#28"}, "status": "accepted"},
        {"type": [{"text": "Provider Virtual Meeting Room"}], "actor": {"reference": "#31"}, "status": "accepted"},
    ]
    return resource


async def test_the_same_appointment_reads_by_each_tenants_vendor(gateway: Gateway) -> None:
    assert (await gateway.ehr("PUT", "/Appointment/vv-1", json=video_visit())).status_code in (200, 201)
    assert (await gateway.ehr("PUT", "/Appointment/vv-1", token=EHR_B, json=video_visit())).status_code in (200, 201)
    await gateway.drain()

    oracle = (await gateway.platform("/appointments/vv-1")).json()
    assert (oracle["modality"], oracle["video_link"]) == ("video", PATIENT_LINK)
    assert (oracle["can_cancel"], oracle["can_reschedule"]) == (True, False)
    assert oracle["source"]["vendor"] == "oracle-health"

    generic = (await gateway.platform("/appointments/vv-1", token=PLATFORM_B)).json()
    assert (generic["modality"], generic["video_link"]) == (None, None)
    assert (generic["can_cancel"], generic["can_reschedule"]) == (None, None)
    assert "contained" in generic["unmapped"]
    assert PROVIDER_LINK not in str(oracle) + str(generic)


async def test_a_new_patient_link_is_an_update_on_the_feed(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/vv-1", json=video_visit())
    await gateway.drain()
    await gateway.ehr("PUT", "/Appointment/vv-1", json=video_visit("https://vmr.example.test/join/patient-new"))
    await gateway.drain()
    events = (await gateway.platform("/changes")).json()["events"]
    assert [e["type"] for e in events] == ["appointment.created", "appointment.updated"]
    assert events[1]["record"]["video_link"] == "https://vmr.example.test/join/patient-new"
