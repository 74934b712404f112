"""What only real sockets show, against the fake EHR process: a body that trickles in, a connection reset."""

from __future__ import annotations

import pytest

from connectors import EHRConfig, Timeout, TransportError
from tests.connectors.conftest import LOOPBACK_ALLOWED, FakeEHR, MakeClient

COMMUNICATION = {
    "resourceType": "Communication", "status": "completed",
    "identifier": [{"system": "urn:fhir-gateway:platform-message", "value": "m-sock"}],
}  # fmt: skip


def _config(fake_ehr: FakeEHR, **changes: object) -> EHRConfig:
    return EHRConfig.model_validate({
        "base_url": fake_ehr.base, "auth": {"type": "none"}, "timeout_seconds": 0.5, "max_attempts": 3,
        "rate_limit_per_second": 1000, **changes,
    })  # fmt: skip


async def test_a_slow_body_times_the_attempt_out_and_a_get_is_tried_again(
    fake_ehr: FakeEHR, make_client: MakeClient
) -> None:
    fake_ehr.fault("GET", "/fhir/Appointment", "slow")
    async with make_client(_config(fake_ehr), outbound=LOOPBACK_ALLOWED) as client:
        bundle = await client.search("Appointment", [("_count", "5")])
    assert bundle["type"] == "searchset"
    assert len(fake_ehr.requests("GET", "/fhir/Appointment")) == 2


async def test_a_slow_body_every_time_ends_in_a_timeout(fake_ehr: FakeEHR, make_client: MakeClient) -> None:
    fake_ehr.fault("GET", "/fhir/Appointment", "slow", "slow")
    async with make_client(_config(fake_ehr, max_attempts=2), outbound=LOOPBACK_ALLOWED) as client:
        with pytest.raises(Timeout):
            await client.search("Appointment", [])


async def test_a_reset_connection_is_retried_for_a_get(fake_ehr: FakeEHR, make_client: MakeClient) -> None:
    fake_ehr.fault("GET", "/fhir/Appointment", "reset", "reset")
    async with make_client(_config(fake_ehr), outbound=LOOPBACK_ALLOWED) as client:
        bundle = await client.search("Appointment", [])
    assert bundle["resourceType"] == "Bundle"
    assert len(fake_ehr.requests("GET", "/fhir/Appointment")) == 3


async def test_a_reset_connection_is_not_retried_for_a_plain_post(fake_ehr: FakeEHR, make_client: MakeClient) -> None:
    fake_ehr.fault("POST", "/fhir/Communication", "reset")
    async with make_client(_config(fake_ehr), outbound=LOOPBACK_ALLOWED) as client:
        with pytest.raises(TransportError):
            await client.create("Communication", COMMUNICATION, if_none_exist=None)
    assert len(fake_ehr.requests("POST", "/fhir/Communication")) == 1
    assert fake_ehr.state()["created"] == []


async def test_a_conditional_create_survives_a_reset_and_creates_once(
    fake_ehr: FakeEHR, make_client: MakeClient
) -> None:
    fake_ehr.fault("POST", "/fhir/Communication", "reset", "503")
    condition = "identifier=urn:fhir-gateway:platform-message|m-sock"
    async with make_client(_config(fake_ehr), outbound=LOOPBACK_ALLOWED) as client:
        written = await client.create("Communication", COMMUNICATION, if_none_exist=condition)
        again = await client.create("Communication", COMMUNICATION, if_none_exist=condition)
    assert written.status == 201 and again.status == 200 and written.rid == again.rid
    assert len(fake_ehr.state()["created"]) == 1
    assert len(fake_ehr.requests("POST", "/fhir/Communication")) == 4
