"""Write-backs: platform requests mapped to FHIR, validated, and queued on the outbound stream for the connectors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conformance.outcome import has_errors
from conformance.validator import validate_resource
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, EHR_B, PLATFORM_A, PLATFORM_B, Gateway, running
from tests.gateway.fixtures import appointment

PLATFORM_ATHENA = "platform-token-athena-0123456789"
PLATFORM_NO_EHR = "platform-token-no-ehr-0123456789"
# The EHR is never called here: these tests run no worker, so what is queued stays queued.
EHR_BLOCK = {"base_url": "https://ehr.example.test/fhir", "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}

CLIENTS = {
    "clients": [
        {"token": EHR_A, "tenant": "clinic-a", "role": "ehr"},
        {"token": PLATFORM_A, "tenant": "clinic-a", "role": "platform", "scopes": ["sensitive"]},
        {"token": EHR_B, "tenant": "clinic-b", "role": "ehr"},
        {"token": PLATFORM_B, "tenant": "clinic-b", "role": "platform"},
        {"token": PLATFORM_ATHENA, "tenant": "clinic-athena", "role": "platform"},
        {"token": PLATFORM_NO_EHR, "tenant": "clinic-plain", "role": "platform"},
    ],
    "tenants": {
        "clinic-a": {"vendor": "generic", "timezone": "America/New_York", "ehr": EHR_BLOCK},
        "clinic-b": {"vendor": "generic", "ehr": EHR_BLOCK},
        "clinic-athena": {"vendor": "athenahealth", "ehr": {**EHR_BLOCK, "practice_id": "195900"}},
        "clinic-plain": {"vendor": "generic"},
    },
}

MESSAGE = {"patient": "Patient/pat-1", "sender": "Patient/pat-1", "body": "Can we move Thursday?"}
SURVEY = {
    "survey": "http://example.org/Questionnaire/mood",
    "patient": "Patient/pat-1",
    "authored_at": "2026-12-01T10:00:00-05:00",
    "answers": [{"link_id": "1", "question": "How is your mood?", "value_type": "integer", "value": 3}],
}
BOOKING = {
    "status": "scheduled",
    "patient": "Patient/pat-1",
    "practitioners": ["Practitioner/prac-1"],
    "start": "2026-12-10T09:00:00-05:00",
    "end": "2026-12-10T09:50:00-05:00",
    "service_type": [{"text": "Psychotherapy"}],
    "modality": "video",
}
CAREPLAN = {
    "resourceType": "CarePlan",
    "meta": {"versionId": "12"},
    "status": "active",
    "intent": "plan",
    "subject": {"reference": "Patient/pat-1"},
    "activity": [{"detail": {"kind": "Appointment", "status": "scheduled", "description": "Weekly CBT session"}}],
}


@pytest.fixture
def writeback_clients() -> ClientsConfig:
    return ClientsConfig.model_validate(CLIENTS)


@pytest.fixture
async def gw(settings: Settings, writeback_clients: ClientsConfig) -> AsyncIterator[Gateway]:
    async with running(settings, writeback_clients, with_worker=False) as gateway:
        yield gateway


async def send(
    gw: Gateway, path: str, body: Any, *, token: str = PLATFORM_A, key: str | None = None, method: str = "POST"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await gw.http.request(method, f"/platform/v1{path}", json=body, headers=headers)


async def outbound(gw: Gateway, tenant: str = "clinic-a") -> list[dict[str, str]]:
    services = gw.app.state.services
    entries = await services.redis.xrange(services.keys.outbound(tenant))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def state(gw: Gateway, wid: str, tenant: str = "clinic-a") -> dict[str, str]:
    services = gw.app.state.services
    raw = await services.redis.hgetall(services.keys.writeback(tenant, wid))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def queued(gw: Gateway, response: httpx.Response, kind: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Check a 202 and its single outbound job; return the state hash and the FHIR resource to send."""
    assert response.status_code == 202, response.text
    body = response.json()
    wid = body["id"]
    assert body == {"id": wid, "status": "queued", "kind": kind, "links": {"self": f"/platform/v1/writebacks/{wid}"}}
    assert response.headers["location"] == f"/platform/v1/writebacks/{wid}"
    assert await outbound(gw) == [{"writeback_id": wid, "kind": kind, "attempt": "0"}]
    held = await state(gw, wid)
    assert held["status"] == "queued" and held["kind"] == kind and held["attempts"] == "0"
    assert held["created_at"].endswith("Z") and held["updated_at"] == held["created_at"]
    resource: dict[str, Any] = json.loads(held["resource"])
    assert resource["resourceType"] == held["resource_type"]
    assert not has_errors(validate_resource(resource))
    return held, resource


def issues(response: httpx.Response) -> list[dict[str, Any]]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    found: list[dict[str, Any]] = outcome["issue"]
    return found


def expressions(response: httpx.Response) -> set[str]:
    return {e for issue in issues(response) for e in issue.get("expression", [])}


async def test_a_message_is_queued_as_a_conditional_create_of_a_valid_communication(gw: Gateway) -> None:
    body = {**MESSAGE, "recipients": ["Practitioner/prac-1"], "category": "reminder", "priority": "urgent"}
    response = await send(gw, "/messages", body)
    held, resource = await queued(gw, response, "message")
    wid = response.json()["id"]
    assert held["method"] == "create" and held["resource_type"] == "Communication"
    assert held["if_none_exist"] == f"identifier=urn:fhir-gateway:platform-message|{wid}"
    assert held["resource_id"] == "" and held["if_match"] == ""
    assert json.loads(held["request"])["body"] == "Can we move Thursday?"
    assert "id" not in resource and resource["status"] == "completed" and resource["priority"] == "urgent"
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["recipient"] == [{"reference": "Practitioner/prac-1"}]
    assert resource["payload"] == [{"contentString": "Can we move Thursday?"}]
    assert resource["category"][0]["coding"][0]["code"] == "reminder"
    services = gw.app.state.services
    groups = await services.redis.xinfo_groups(services.keys.outbound("clinic-a"))
    assert groups == [], "the connectors' consumer creates the group (from the stream's start), not the API"


async def test_a_reply_names_its_thread_and_keeps_its_labels(
    settings: Settings, writeback_clients: ClientsConfig
) -> None:
    root = {
        "resourceType": "Communication",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "sent": "2026-12-01T10:00:00Z",
        "payload": [{"contentString": "How are you feeling?"}],
    }
    async with running(settings, writeback_clients, with_worker=True) as mapping:
        assert (await mapping.ehr("PUT", "/Communication/c1", json={**root, "id": "c1"})).status_code == 201
        await mapping.drain()
    # The worker made the thread; without it (it would deliver to the EHR) the reply stays queued to be checked.
    async with running(settings, writeback_clients, with_worker=False) as gateway:
        response = await send(gateway, "/messages", {**MESSAGE, "thread_id": "c1"})
        _, resource = await queued(gateway, response, "message")
        assert resource["partOf"] == [{"reference": "Communication/c1"}]
        assert resource["inResponseTo"] == [{"reference": "Communication/c1"}]
        assert resource["meta"]["security"][0]["code"] == "PSY"
        unknown = await send(gateway, "/messages", {**MESSAGE, "thread_id": "nope"})
        assert unknown.status_code == 404 and expressions(unknown) == {"thread_id"}
        other = await send(
            gateway,
            "/messages",
            {**MESSAGE, "patient": "Patient/pat-2", "sender": "Practitioner/prac-1", "thread_id": "c1"},
        )
        assert other.status_code == 422 and expressions(other) == {"patient"}
        assert len(await outbound(gateway)) == 1


async def test_a_survey_response_is_queued_and_checked_against_its_questionnaire(gw: Gateway) -> None:
    response = await send(gw, "/survey-responses", SURVEY)
    held, resource = await queued(gw, response, "survey_response")
    assert held["method"] == "create" and held["resource_type"] == "QuestionnaireResponse"
    assert held["if_none_exist"].startswith("identifier=urn:ietf:rfc:3986|urn:uuid:")
    assert resource["questionnaire"] == SURVEY["survey"] and resource["status"] == "completed"
    assert resource["authored"] == "2026-12-01T15:00:00Z"
    assert resource["item"] == [{"linkId": "1", "text": "How is your mood?", "answer": [{"valueInteger": 3}]}]

    form = {
        "resourceType": "Questionnaire",
        "url": SURVEY["survey"],
        "status": "active",
        "item": [{"linkId": "1", "text": "How is your mood?", "type": "integer"}],
    }
    assert (await gw.ehr("PUT", "/Questionnaire/mood", json={**form, "id": "mood"})).status_code == 201
    wrong = {**SURVEY, "answers": [{"link_id": "1", "value_type": "string", "value": "fine"}]}
    refused = await send(gw, "/survey-responses", wrong)
    assert refused.status_code == 422
    assert expressions(refused) == {"QuestionnaireResponse.item[0].answer[0].valueString"}
    assert len(await outbound(gw)) == 1


async def test_a_booking_and_a_request_become_booked_and_proposed_appointments(gw: Gateway) -> None:
    response = await send(gw, "/appointments", BOOKING)
    held, resource = await queued(gw, response, "appointment")
    wid = response.json()["id"]
    assert held["if_none_exist"] == f"identifier=urn:fhir-gateway:platform-appointment|{wid}"
    assert resource["status"] == "booked"
    assert (resource["start"], resource["end"]) == ("2026-12-10T14:00:00Z", "2026-12-10T14:50:00Z")
    assert [p["actor"]["reference"] for p in resource["participant"]] == ["Patient/pat-1", "Practitioner/prac-1"]
    assert {p["status"] for p in resource["participant"]} == {"accepted"}

    request = {
        "patient": "Patient/pat-1",
        "requested_period": {"start": "2026-12-14T08:00:00-05:00", "end": "2026-12-18T18:00:00-05:00"},
        "comment": "Mornings preferred",
    }
    proposed = await send(gw, "/appointments", request)
    assert proposed.status_code == 202
    resource = json.loads((await state(gw, proposed.json()["id"]))["resource"])
    assert not has_errors(validate_resource(resource))
    assert resource["status"] == "proposed" and "start" not in resource
    assert resource["requestedPeriod"] == [{"start": "2026-12-14T13:00:00Z", "end": "2026-12-18T23:00:00Z"}]
    assert resource["participant"] == [{"actor": {"reference": "Patient/pat-1"}, "status": "needs-action"}]

    no_time = await send(gw, "/appointments", {**BOOKING, "start": None, "end": None})
    assert no_time.status_code == 422 and expressions(no_time) == {"start"}
    backwards = await send(gw, "/appointments", {**BOOKING, "end": "2026-12-10T08:00:00-05:00"})
    assert backwards.status_code == 422 and expressions(backwards) == {"end"}
    assert len(await outbound(gw)) == 2


async def test_cancel_updates_the_stored_appointment_with_if_match(gw: Gateway) -> None:
    missing = await send(gw, "/appointments/nope/cancel", {"reason": "Unwell"})
    assert missing.status_code == 404 and issues(missing)[0]["code"] == "not-found"
    assert await outbound(gw) == []

    stored = appointment(id="appt-1", meta={"versionId": "7", "lastUpdated": "2026-11-01T10:00:00Z"})
    assert (await gw.ehr("PUT", "/Appointment/appt-1", json=stored)).status_code == 201
    response = await send(gw, "/appointments/appt-1/cancel", {"reason": "Unwell"})
    held, resource = await queued(gw, response, "appointment_cancel")
    assert (held["method"], held["resource_type"], held["resource_id"]) == ("update", "Appointment", "appt-1")
    assert held["if_match"] == "7" and held["if_none_exist"] == ""
    assert resource["id"] == "appt-1" and resource["status"] == "cancelled"
    assert resource["cancelationReason"] == {"text": "Unwell"}
    assert "meta" not in resource  # neither the gateway's version nor its bookkeeping goes to the EHR
    assert resource["participant"] == stored["participant"]

    done = appointment(id="appt-2", status="cancelled")
    assert (await gw.ehr("PUT", "/Appointment/appt-2", json=done)).status_code == 201
    again = await send(gw, "/appointments/appt-2/cancel", None)
    assert again.status_code == 422 and "cancelled" in issues(again)[0]["diagnostics"]
    assert len(await outbound(gw)) == 1


async def test_an_activity_status_is_an_update_of_the_stored_care_plan(gw: Gateway) -> None:
    assert (await gw.ehr("PUT", "/CarePlan/cp1", json={**CAREPLAN, "id": "cp1"})).status_code == 201
    response = await send(gw, "/treatment-plans/cp1/activities/0", {"status": "completed"}, method="PATCH")
    held, resource = await queued(gw, response, "treatment_plan_activity")
    assert (held["method"], held["resource_type"], held["resource_id"], held["if_match"]) == (
        "update",
        "CarePlan",
        "cp1",
        "12",
    )
    assert resource["id"] == "cp1" and resource["activity"][0]["detail"]["status"] == "completed"
    assert json.loads(held["request"]) == {"id": "cp1", "index": 0, "status": "completed"}

    out_of_range = await send(gw, "/treatment-plans/cp1/activities/3", {"status": "completed"}, method="PATCH")
    assert out_of_range.status_code == 422 and expressions(out_of_range) == {"index"}
    bad_status = await send(gw, "/treatment-plans/cp1/activities/0", {"status": "finished"}, method="PATCH")
    assert bad_status.status_code == 422 and expressions(bad_status) == {"status"}
    unknown = await send(gw, "/treatment-plans/nope/activities/0", {"status": "completed"}, method="PATCH")
    assert unknown.status_code == 404
    assert len(await outbound(gw)) == 1


async def test_the_same_idempotency_key_gives_one_write_back(gw: Gateway) -> None:
    first = await send(gw, "/messages", MESSAGE, key="msg-0001")
    again = await send(gw, "/messages", dict(reversed(MESSAGE.items())), key="msg-0001")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await outbound(gw) == [{"writeback_id": first.json()["id"], "kind": "message", "attempt": "0"}]

    changed = await send(gw, "/messages", {**MESSAGE, "body": "Something else"}, key="msg-0001")
    assert changed.status_code == 422 and expressions(changed) == {"Idempotency-Key"}
    assert "different request" in issues(changed)[0]["diagnostics"]
    elsewhere = await send(gw, "/survey-responses", SURVEY, key="msg-0001")
    assert elsewhere.status_code == 422

    racing = await asyncio.gather(*(send(gw, "/appointments", BOOKING, key="book-7") for _ in range(6)))
    assert {r.status_code for r in racing} == {202}
    assert len({r.json()["id"] for r in racing}) == 1
    services = gw.app.state.services
    stored = [k async for k in services.redis.scan_iter(match=services.keys.writeback("clinic-a", "*"))]
    assert len(stored) == 2 and len(await outbound(gw)) == 2

    # Another tenant's key space is its own.
    other = await send(gw, "/messages", MESSAGE, token=PLATFORM_B, key="msg-0001")
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


async def test_a_write_back_the_vendor_cannot_take_is_refused_before_anything_is_queued(gw: Gateway) -> None:
    refused = await send(gw, "/messages", MESSAGE, token=PLATFORM_ATHENA)
    assert refused.status_code == 422
    said = issues(refused)[0]["diagnostics"]
    assert "athenahealth" in said and "message" in said and "Communication" in said
    plan = await send(gw, "/treatment-plans/cp1/activities/0", {"status": "completed"}, token=PLATFORM_ATHENA,
                      method="PATCH")  # fmt: skip
    assert plan.status_code == 422 and "treatment_plan" in issues(plan)[0]["diagnostics"]
    assert await outbound(gw, "clinic-athena") == []
    services = gw.app.state.services
    assert await services.redis.xlen(services.keys.outbound("clinic-athena")) == 0

    booked = await send(gw, "/appointments", BOOKING, token=PLATFORM_ATHENA)
    assert booked.status_code == 202
    assert len(await outbound(gw, "clinic-athena")) == 1


async def test_a_tenant_without_an_ehr_connector_is_refused(gw: Gateway) -> None:
    for path, body in (("/messages", MESSAGE), ("/survey-responses", SURVEY), ("/appointments", BOOKING)):
        refused = await send(gw, path, body, token=PLATFORM_NO_EHR)
        assert refused.status_code == 422
        assert "no EHR connector" in issues(refused)[0]["diagnostics"]
    assert await outbound(gw, "clinic-plain") == []


async def test_the_status_of_a_write_back_is_readable_by_its_tenant_only(gw: Gateway) -> None:
    wid = (await send(gw, "/messages", MESSAGE)).json()["id"]
    headers = {"Authorization": f"Bearer {PLATFORM_A}"}
    view = (await gw.http.get(f"/platform/v1/writebacks/{wid}", headers=headers)).json()
    assert view["id"] == wid and view["status"] == "queued" and view["kind"] == "message"
    assert view["method"] == "create" and view["resource_type"] == "Communication" and view["attempts"] == 0
    assert view["ehr_id"] is None and view["outcome"] is None
    assert view["links"] == {"self": f"/platform/v1/writebacks/{wid}"}

    other = await gw.http.get(f"/platform/v1/writebacks/{wid}", headers={"Authorization": f"Bearer {PLATFORM_B}"})
    assert other.status_code == 404 and issues(other)[0]["code"] == "not-found"
    garbage = await gw.http.get("/platform/v1/writebacks/not-an-id", headers=headers)
    assert garbage.status_code == 404
    assert (await gw.http.get(f"/platform/v1/writebacks/{wid}")).status_code == 401

    # What the connectors record shows through: delivered with the EHR's id and version, or failed with its outcome.
    services = gw.app.state.services
    key = services.keys.writeback("clinic-a", wid)
    await services.redis.hset(key, mapping={"status": "delivered", "ehr_id": "comm-9", "ehr_version": "1"})
    view = (await gw.http.get(f"/platform/v1/writebacks/{wid}", headers=headers)).json()
    assert (view["status"], view["ehr_id"], view["ehr_version"]) == ("delivered", "comm-9", "1")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "business-rule"}]}
    await services.redis.hset(key, mapping={"status": "failed", "outcome": json.dumps(outcome), "attempts": 2})
    view = (await gw.http.get(f"/platform/v1/writebacks/{wid}", headers=headers)).json()
    assert (view["status"], view["outcome"], view["attempts"]) == ("failed", outcome, 2)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/messages", {"sender": "Patient/pat-1", "body": "hi"}, {"patient"}),
        ("/messages", {**MESSAGE, "sender": "Organization/o1"}, {"sender"}),
        ("/messages", {**MESSAGE, "sender": "Patient/pat-2"}, {"sender"}),
        ("/messages", {**MESSAGE, "body": "   "}, {"body"}),
        ("/messages", {**MESSAGE, "priority": "soon"}, {"priority"}),
        ("/messages", {**MESSAGE, "recipients": ["Practitioner/ok", "nobody"]}, {"recipients[1]"}),
        ("/messages", {**MESSAGE, "colour": "red"}, {"colour"}),
        ("/survey-responses", {**SURVEY, "answers": []}, {"answers"}),
        ("/survey-responses", {**SURVEY, "authored_at": "2026-12-01T10:00:00"}, {"authored_at"}),
        (
            "/survey-responses",
            {**SURVEY, "answers": [{"link_id": "1", "value_type": "integer", "value": "three"}]},
            {"answers[0].value"},
        ),
        (
            "/survey-responses",
            {**SURVEY, "answers": [{"link_id": "1", "value_type": "coding", "value": {"colour": "x"}}]},
            {"answers[0].value"},
        ),
        ("/appointments", {**BOOKING, "status": "booked"}, {"status"}),
        ("/appointments", {**BOOKING, "practitioners": ["Patient/pat-2"]}, {"practitioners[0]"}),
        ("/appointments", {**BOOKING, "minutes_duration": 0}, {"minutes_duration"}),
        # A moment that has no UTC form (the year before 1 or after 9999 there) is no FHIR instant.
        ("/appointments", {**BOOKING, "start": "0001-01-01T00:00:00+00:01"}, {"start"}),
        (
            "/appointments",
            {"patient": "Patient/p", "requested_period": {"end": "9999-12-31T23:59:00-01:00"}},
            {"requested_period.end"},
        ),
        ("/survey-responses", {**SURVEY, "authored_at": "0001-01-01T00:30:00+01:00"}, {"authored_at"}),
        ("/appointments/appt-1/cancel", {"reason": ""}, {"reason"}),
        ("/appointments/appt-1/cancel", [1], None),
    ],
)
async def test_bad_request_bodies_are_422_outcomes_naming_the_field(
    gw: Gateway, path: str, body: Any, expected: set[str] | None
) -> None:
    response = await send(gw, path, body)
    assert response.status_code == 422, response.text
    assert all(issue["severity"] == "error" for issue in issues(response))
    if expected is not None:
        assert expressions(response) == expected
    assert await outbound(gw) == []


async def test_what_is_not_a_platform_request_is_refused_before_its_body_is_judged(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {PLATFORM_A}", "Content-Type": "application/json"}
    malformed = await gw.http.post("/platform/v1/messages", content=b'{"patient": ', headers=headers)
    assert malformed.status_code == 400 and issues(malformed)
    assert (await send(gw, "/messages", {"body": 1}, token=EHR_A)).status_code == 403
    assert (await gw.http.post("/platform/v1/messages", json=MESSAGE)).status_code == 401
    bad_key = await send(gw, "/messages", MESSAGE, key="with space")
    assert bad_key.status_code == 400 and expressions(bad_key) == {"Idempotency-Key"}  # a bad header is 400
    assert await outbound(gw) == []


async def test_the_openapi_document_lists_the_write_back_routes(gw: Gateway) -> None:
    paths = (await gw.http.get("/openapi.json")).json()["paths"]
    assert {"post"} <= set(paths["/platform/v1/messages"])
    assert {"post"} <= set(paths["/platform/v1/survey-responses"])
    assert {"post"} <= set(paths["/platform/v1/appointments"])
    assert {"post"} <= set(paths["/platform/v1/appointments/{appointment_id}/cancel"])
    assert {"patch"} <= set(paths["/platform/v1/treatment-plans/{plan_id}/activities/{index}"])
    assert {"get"} <= set(paths["/platform/v1/writebacks/{wid}"])
    responses = paths["/platform/v1/messages"]["post"]["responses"]
    assert "202" in responses and "OperationOutcome" in json.dumps(responses["422"])
