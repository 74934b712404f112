"""The risk lane: QuestionnaireResponses travel apart from other work, their flags are acknowledged by a person,
and a flag nobody acknowledges is escalated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import ClientsConfig, Settings
from gateway.store import Update
from tests.conftest import PLATFORM_A, PLATFORM_A_BASIC, Gateway, running
from tests.gateway.fixtures import appointment
from tests.gateway.test_survey_flow import questionnaire, response
from tests.support import ShiftedClock, until

PSY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}


async def _events(gateway: Gateway, token: str = PLATFORM_A) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await gateway.platform("/changes?limit=1000", token=token)).json()["events"]
    return events


async def _flagged(gateway: Gateway) -> list[dict[str, Any]]:
    return [e for e in await _events(gateway) if e["type"] == "risk.flagged"]


async def test_a_questionnaire_response_goes_on_the_risk_lane(gateway: Gateway) -> None:
    services = gateway.services
    await gateway.ehr("PUT", "/QuestionnaireResponse/lane", json=response("lane", [0] * 9))
    await gateway.ehr("PUT", "/Appointment/lane", json=appointment(id="lane"))
    risk = [f[b"type"] for _, f in await services.redis.xrange(services.keys.inbound("clinic-a", "risk"))]
    default = [f[b"type"] for _, f in await services.redis.xrange(services.keys.inbound("clinic-a"))]
    assert b"QuestionnaireResponse" not in default
    assert risk in ([b"QuestionnaireResponse"], [])  # [] once the worker took it
    await gateway.drain()
    assert (await gateway.platform("/survey-responses/lane")).json()["status"] == "completed"


@pytest.fixture
async def slow_lane(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    """A worker that takes one ordinary job at a time, so a backlog of them lasts."""
    async with running(settings.model_copy(update={"worker_concurrency": 1}), clients, with_worker=True) as gw:
        yield gw


async def test_a_flag_reaches_the_feed_while_a_backlog_of_other_work_waits(slow_lane: Gateway) -> None:
    services = slow_lane.services
    await slow_lane.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    for start in range(0, 3000, 500):
        ops = [Update("Appointment", f"b{i}", appointment(id=f"b{i}")) for i in range(start, start + 500)]
        await services.store.apply("clinic-a", ops)
    await slow_lane.ehr("PUT", "/QuestionnaireResponse/urgent", json=response("urgent", [0] * 8 + [3]))
    [flag] = await until(lambda: _flagged(slow_lane), "the risk.flagged event")
    assert flag["record_id"] == "urgent" and flag["record"]["risk_flags"] == ["self_harm"]
    waiting = await services.inbound.backlog("clinic-a")
    print(f"risk.flagged on the feed with {waiting} ordinary jobs still queued")
    assert waiting > 1000  # it did not wait for them


async def test_a_flag_is_acknowledged_once_and_then_never_escalated(gateway: Gateway, clock: ShiftedClock) -> None:
    await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    await gateway.ehr("PUT", "/QuestionnaireResponse/ack", json=response("ack", [0] * 8 + [1]))
    [event] = await until(lambda: _flagged(gateway), "the risk.flagged event")
    open_flags = (await gateway.platform("/risk-flags")).json()["risk_flags"]
    assert [f["id"] for f in open_flags] == [event["id"]]
    assert open_flags[0]["record_id"] == "ack" and open_flags[0]["acknowledged_at"] is None

    path = f"/platform/v1/risk-flags/{event['id']}/acknowledge"
    first = await gateway.http.post(path, headers=gateway.headers(PLATFORM_A))
    assert first.status_code == 200 and first.json()["acknowledged_by"] == "clinic-a-platform-1"
    clock.advance(5)
    again = await gateway.http.post(path, headers=gateway.headers(PLATFORM_A_BASIC))
    assert again.json() == first.json()  # the first acknowledgement stands
    assert (await gateway.platform("/risk-flags")).json()["risk_flags"] == []

    witness = await gateway.ehr("PUT", "/QuestionnaireResponse/w", json=response("w", [0] * 8 + [2]))
    assert witness.status_code in (200, 201)
    await until(lambda: _count_flagged(gateway, 2), "the witness flag")
    clock.advance(86_400)  # far past the escalation delay
    await until(lambda: _escalations(gateway, "w"), "the witness flag's escalation")
    assert await _escalations(gateway, "ack") == []


async def _count_flagged(gateway: Gateway, n: int) -> bool:
    return len(await _flagged(gateway)) == n


async def _escalations(gateway: Gateway, record_id: str) -> list[dict[str, Any]]:
    return [e for e in await _events(gateway) if e["type"] == "risk.escalated" and e["record_id"] == record_id]


async def test_an_unacknowledged_flag_is_escalated_once_with_its_record(gateway: Gateway, clock: ShiftedClock) -> None:
    await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    await gateway.ehr("PUT", "/QuestionnaireResponse/esc", json=response("esc", [0] * 8 + [2]))
    [flagged] = await until(lambda: _flagged(gateway), "the risk.flagged event")
    clock.advance(gateway.services.settings.risk_escalate_seconds + 1)
    [escalated] = await until(lambda: _escalations(gateway, "esc"), "the escalation")
    assert escalated["flag"]["id"] == flagged["id"] and escalated["record"]["risk_flags"] == ["self_harm"]
    flag = (await gateway.platform(f"/risk-flags/{flagged['id']}")).json()
    assert flag["escalated_at"] is not None and flag["acknowledged_at"] is None
    clock.advance(3600)
    await gateway.ehr("PUT", "/Appointment/tick", json=appointment(id="tick"))
    await gateway.drain()
    assert len(await _escalations(gateway, "esc")) == 1


async def test_the_flags_of_a_sensitive_record_do_not_exist_without_the_scope(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    labelled = response("psy", [0] * 8 + [1], meta=PSY)
    await gateway.ehr("PUT", "/QuestionnaireResponse/psy", json=labelled)
    [event] = await until(lambda: _flagged(gateway), "the risk.flagged event")
    assert (await gateway.platform("/risk-flags", token=PLATFORM_A_BASIC)).json()["risk_flags"] == []
    assert (await gateway.platform(f"/risk-flags/{event['id']}", token=PLATFORM_A_BASIC)).status_code == 404
    path = f"/platform/v1/risk-flags/{event['id']}/acknowledge"
    refused = await gateway.http.post(path, headers=gateway.headers(PLATFORM_A_BASIC))
    assert refused.status_code == 404
    assert (await gateway.platform(f"/risk-flags/{event['id']}")).json()["acknowledged_at"] is None
