"""Logs carry ids and resource types only: never a payload, a name or a search value."""

from __future__ import annotations

import logging

import pytest

from gateway.logs import JsonFormatter
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment

SECRET = "Zebediah-Quibble-555-0199"


async def test_no_payload_or_search_value_reaches_the_log(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patient = {"resourceType": "Patient", "id": "p-log", "name": [{"family": SECRET}],
               "identifier": [{"system": "urn:mrn", "value": SECRET}]}  # fmt: skip
    await gateway.ehr("PUT", "/Patient/p-log", json=patient)
    await gateway.ehr("PUT", "/Appointment/a-log", json=appointment(id="a-log", description=SECRET))
    await gateway.ehr("PUT", "/Appointment/a-bad", json=appointment(id="a-bad", status=SECRET))
    await gateway.ehr("GET", f"/Patient?identifier=urn:mrn|{SECRET}")
    await gateway.ehr("POST", "/Appointment", content=f'{{"resourceType": "Appointment", "x": "{SECRET}"'.encode())
    await gateway.ehr("GET", f"/{SECRET}/1")
    await gateway.drain()
    # httpx's own records are this test's client talking, not the gateway.
    lines = [JsonFormatter().format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any('"route": "/fhir/R4/{rtype}/{rid}"' in line for line in lines)
    assert not [line for line in lines if SECRET in line]
