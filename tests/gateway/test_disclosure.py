"""Sensitive records do not exist, not even as metadata, for a platform client without the ``sensitive`` scope.

Each test puts labelled records next to plain ones and checks that what a client without the scope gets is exactly
what it would get if the labelled records were not there (compared with a patient, an id or a status nobody has),
and that a client with the scope sees everything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.settings import ClientsConfig, Settings
from gateway.store import Update
from tests.conftest import CLIENTS, PLATFORM_A, PLATFORM_A_BASIC, Gateway, running
from tests.gateway.fixtures import appointment
from tests.gateway.test_survey_flow import questionnaire, response
from tests.gateway.test_writebacks import CAREPLAN, EHR_BLOCK, MESSAGE
from tests.support import ShiftedClock

PSY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}
HIDDEN_PATIENT = "Patient/p-hidden"  # has labelled records only
NOBODY = "Patient/p-nobody"  # has no records at all


def _appt(rid: str, patient: str, start: str, *, status: str = "booked", labelled: bool = False) -> dict[str, Any]:
    end = start.replace(":00:00Z", ":30:00Z")
    participant = [{"actor": {"reference": patient}, "status": "accepted"}]
    extra = {"meta": PSY, "description": "Psychotherapy session"} if labelled else {}
    return appointment(id=rid, start=start, end=end, status=status, participant=participant, **extra)


async def _put_all(gateway: Gateway, *resources: dict[str, Any]) -> None:
    for resource in resources:
        answer = await gateway.ehr("PUT", f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert answer.status_code in (200, 201), answer.text
        await gateway.drain()


async def _json(gateway: Gateway, path: str, token: str) -> Any:
    return (await gateway.platform(path, token=token)).json()


async def _pages(gateway: Gateway, path: str, token: str) -> list[list[str]]:
    """Return the ids of every page of a record query, following next_cursor."""
    pages, cursor = [], None
    while True:
        page = await _json(gateway, path + (f"&cursor={cursor}" if cursor else ""), token)
        pages.append([r["id"] for r in page["records"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
async def mixed(gateway: Gateway) -> Gateway:
    """Plain appointments for Patient/pat-1, labelled ones for Patient/p-hidden, dates interleaved."""
    await _put_all(
        gateway,
        _appt("psy-a", HIDDEN_PATIENT, "2026-12-01T15:00:00Z", labelled=True),
        _appt("plain-1", "Patient/pat-1", "2026-12-02T15:00:00Z"),
        _appt("psy-b", HIDDEN_PATIENT, "2026-12-03T15:00:00Z", status="cancelled", labelled=True),
        _appt("plain-2", "Patient/pat-1", "2026-12-04T15:00:00Z"),
        _appt("psy-c", HIDDEN_PATIENT, "2026-12-05T15:00:00Z", labelled=True),
    )
    return gateway


async def test_a_patients_labelled_records_are_answered_as_a_patient_with_none(mixed: Gateway) -> None:
    hidden = await _json(mixed, f"/appointments?patient={HIDDEN_PATIENT}", PLATFORM_A_BASIC)
    nobody = await _json(mixed, f"/appointments?patient={NOBODY}", PLATFORM_A_BASIC)
    assert hidden == nobody == {"records": [], "next_cursor": None}
    full = await _json(mixed, f"/appointments?patient={HIDDEN_PATIENT}", PLATFORM_A)
    assert [r["id"] for r in full["records"]] == ["psy-a", "psy-b", "psy-c"]
    assert full["records"][0]["description"] == "Psychotherapy session"


async def test_a_labelled_record_by_id_is_the_404_of_an_id_nobody_holds(mixed: Gateway) -> None:
    labelled = await mixed.platform("/appointments/psy-a", token=PLATFORM_A_BASIC)
    missing = await mixed.platform("/appointments/psy-x", token=PLATFORM_A_BASIC)
    assert labelled.status_code == missing.status_code == 404
    assert labelled.text == missing.text.replace("psy-x", "psy-a")
    assert (await _json(mixed, "/appointments/psy-a", PLATFORM_A))["description"] == "Psychotherapy session"


async def test_filters_and_pages_never_count_a_labelled_record(mixed: Gateway) -> None:
    # Status and dates: a labelled record is never matched, so bisecting them learns nothing.
    cancelled = await _json(mixed, "/appointments?status=cancelled", PLATFORM_A_BASIC)
    nobody_has = await _json(mixed, "/appointments?status=entered-in-error", PLATFORM_A_BASIC)
    assert cancelled == nobody_has == {"records": [], "next_cursor": None}
    window = await _json(mixed, "/appointments?from=2026-12-05&to=2026-12-06", PLATFORM_A_BASIC)
    assert window == {"records": [], "next_cursor": None}
    since = await _json(mixed, "/appointments?updated_since=2000-01-01T00:00:00Z", PLATFORM_A_BASIC)
    assert [r["id"] for r in since["records"]] == ["plain-1", "plain-2"]
    # Pages are full and end where the visible records end: a labelled record leaves no short page or extra cursor.
    assert await _pages(mixed, "/appointments?limit=1", PLATFORM_A_BASIC) == [["plain-1"], ["plain-2"]]
    assert await _pages(mixed, "/appointments?limit=2", PLATFORM_A_BASIC) == [["plain-1", "plain-2"]]
    assert await _pages(mixed, "/appointments?limit=2", PLATFORM_A) == [
        ["psy-a", "plain-1"], ["psy-b", "plain-2"], ["psy-c"]
    ]  # fmt: skip
    assert [r["id"] for r in (await _json(mixed, "/appointments?status=cancelled", PLATFORM_A))["records"]] == ["psy-b"]


async def test_the_feed_passes_over_labelled_events(mixed: Gateway) -> None:
    full = await _json(mixed, "/changes?limit=1000", PLATFORM_A)
    assert [e["record_id"] for e in full["events"]] == ["psy-a", "plain-1", "psy-b", "plain-2", "psy-c"]
    basic = await _json(mixed, "/changes?limit=1000", PLATFORM_A_BASIC)
    assert [e["record_id"] for e in basic["events"]] == ["plain-1", "plain-2"]
    assert "psy" not in str(basic) and "Psychotherapy" not in str(basic)
    # Page by page: every page full, as if the labelled events were not there.
    seen, cursor = [], ""
    for _ in range(2):
        page = await _json(mixed, f"/changes?limit=1&cursor={cursor}", PLATFORM_A_BASIC)
        seen += [e["record_id"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert seen == ["plain-1", "plain-2"]
    # The cursor still moves past them, so reading on never stalls; a type only labelled records had is empty.
    rest = await _json(mixed, f"/changes?cursor={cursor}", PLATFORM_A_BASIC)
    assert rest["events"] == []
    assert (await _json(mixed, f"/changes?cursor={rest['next_cursor']}", PLATFORM_A_BASIC)) == rest
    cancelled = await _json(mixed, "/changes?types=appointment.cancelled", PLATFORM_A_BASIC)
    assert cancelled["events"] == []
    await _put_all(mixed, _appt("plain-3", "Patient/pat-1", "2026-12-06T15:00:00Z"))
    after = await _json(mixed, f"/changes?cursor={rest['next_cursor']}", PLATFORM_A_BASIC)
    assert [e["record_id"] for e in after["events"]] == ["plain-3"]


async def test_risk_flags_of_labelled_records_are_not_listed_or_counted(gateway: Gateway, clock: ShiftedClock) -> None:
    await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    await _put_all(gateway, response("psy", [0] * 8 + [2], meta=PSY))
    clock.advance(60)
    await _put_all(gateway, response("plain", [0] * 8 + [1]))
    flagged = await _flags(gateway, PLATFORM_A, limit=10)
    assert [f["record_id"] for f in flagged] == ["psy", "plain"]
    # The oldest open flag is the labelled one: without the scope the first page still holds the plain one.
    assert [f["record_id"] for f in await _flags(gateway, PLATFORM_A_BASIC, limit=1)] == ["plain"]
    feed = await _json(gateway, "/changes?types=risk.*", PLATFORM_A_BASIC)
    assert [e["record_id"] for e in feed["events"]] == ["plain"]
    hidden_id = flagged[0]["id"]
    known = await gateway.platform(f"/risk-flags/{hidden_id}", token=PLATFORM_A_BASIC)
    unknown = await gateway.platform("/risk-flags/evt_00000000000000000000000000000000", token=PLATFORM_A_BASIC)
    assert known.status_code == unknown.status_code == 404 and known.json() == unknown.json()


async def _flags(gateway: Gateway, token: str, *, limit: int) -> list[dict[str, Any]]:
    flags: list[dict[str, Any]] = (await _json(gateway, f"/risk-flags?limit={limit}", token))["risk_flags"]
    return flags


# ---- write-backs: a labelled thread, appointment or plan is no target -------------------------------------------

WRITEBACK_CLIENTS = {**CLIENTS, "tenants": {"clinic-a": {"vendor": "generic", "ehr": EHR_BLOCK}}}


@pytest.fixture
def writeback_clients() -> ClientsConfig:
    return ClientsConfig.model_validate(WRITEBACK_CLIENTS)


async def _send(
    gw: Gateway, path: str, body: Any, token: str, method: str = "POST", key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}
    return await gw.http.request(method, f"/platform/v1{path}", json=body, headers=headers)


async def _outbound(gw: Gateway) -> int:
    services = gw.services
    return int(await services.redis.xlen(services.keys.outbound("clinic-a")))


@pytest.fixture
async def labelled_targets(settings: Settings, writeback_clients: ClientsConfig) -> AsyncIterator[Gateway]:
    """A labelled message thread (mapped by the worker), appointment and care plan; then no worker, so write-backs
    stay queued where the test can count them."""
    thread = {
        "resourceType": "Communication", "id": "c-psy", "meta": PSY, "status": "completed",
        "subject": {"reference": "Patient/pat-1"}, "sent": "2026-12-01T10:00:00Z",
        "payload": [{"contentString": "How are you feeling?"}],
    }  # fmt: skip
    async with running(settings, writeback_clients, with_worker=True) as mapping:
        await _put_all(
            mapping,
            thread,
            _appt("appt-psy", "Patient/pat-1", "2026-12-10T15:00:00Z", labelled=True),
            {**CAREPLAN, "id": "cp-psy", "meta": {**CAREPLAN["meta"], **PSY}},
        )
    async with running(settings, writeback_clients, with_worker=False) as gw:
        yield gw


async def test_a_reply_to_a_labelled_thread_is_the_404_of_an_unknown_thread(labelled_targets: Gateway) -> None:
    gw = labelled_targets
    for body in ({**MESSAGE}, {**MESSAGE, "patient": "Patient/pat-2", "sender": "Practitioner/prac-1"}):
        labelled = await _send(gw, "/messages", {**body, "thread_id": "c-psy"}, PLATFORM_A_BASIC)
        unknown = await _send(gw, "/messages", {**body, "thread_id": "c-none"}, PLATFORM_A_BASIC)
        assert labelled.status_code == unknown.status_code == 404, labelled.text
        assert labelled.json() == unknown.json() and "pat" not in labelled.text
    assert await _outbound(gw) == 0
    await _its_writeback_does_not_exist_either(gw, "/messages", {**MESSAGE, "thread_id": "c-psy"})


async def _its_writeback_does_not_exist_either(gw: Gateway, path: str, body: dict[str, Any]) -> None:
    """The client with the scope writes; the one without cannot read that write-back or replay its key."""
    made = await _send(gw, path, body, PLATFORM_A, key="k-psy")
    assert made.status_code == 202 and await _outbound(gw) == 1
    assert (await gw.platform(f"/writebacks/{made.json()['id']}")).status_code == 200
    read = await gw.platform(f"/writebacks/{made.json()['id']}", token=PLATFORM_A_BASIC)
    unknown = await gw.platform("/writebacks/00000000-0000-4000-8000-000000000000", token=PLATFORM_A_BASIC)
    assert read.status_code == unknown.status_code == 404 and read.text == unknown.text
    replayed = await _send(gw, path, body, PLATFORM_A_BASIC, key="k-psy")
    assert replayed.status_code == 404 and made.json()["id"] not in replayed.text
    assert (await _send(gw, path, body, PLATFORM_A, key="k-psy")).json()["id"] == made.json()["id"]
    assert await _outbound(gw) == 1


async def test_cancelling_a_labelled_appointment_is_the_404_of_an_unknown_one(labelled_targets: Gateway) -> None:
    gw = labelled_targets
    labelled = await _send(gw, "/appointments/appt-psy/cancel", {"reason": "Unwell"}, PLATFORM_A_BASIC)
    unknown = await _send(gw, "/appointments/appt-none/cancel", {"reason": "Unwell"}, PLATFORM_A_BASIC)
    assert labelled.status_code == unknown.status_code == 404
    assert labelled.text == unknown.text.replace("appt-none", "appt-psy")
    activity = await _send(
        gw, "/treatment-plans/cp-psy/activities/0", {"status": "completed"}, PLATFORM_A_BASIC, "PATCH"
    )
    nothing = await _send(
        gw, "/treatment-plans/cp-none/activities/0", {"status": "completed"}, PLATFORM_A_BASIC, "PATCH"
    )
    assert activity.status_code == nothing.status_code == 404
    assert activity.text == nothing.text.replace("cp-none", "cp-psy")
    assert await _outbound(gw) == 0
    await _its_writeback_does_not_exist_either(gw, "/appointments/appt-psy/cancel", {"reason": "Unwell"})


async def test_a_labelled_resource_not_yet_mapped_is_no_target_either(
    settings: Settings, writeback_clients: ClientsConfig
) -> None:
    async with running(settings, writeback_clients, with_worker=False) as gw:  # stored, no record made yet
        await gw.ehr("PUT", "/Appointment/appt-new", json=_appt("appt-new", "Patient/pat-1", "2026-12-11T15:00:00Z",
                                                                labelled=True))  # fmt: skip
        refused = await _send(gw, "/appointments/appt-new/cancel", None, PLATFORM_A_BASIC)
        assert refused.status_code == 404 and await _outbound(gw) == 0
        assert (await _send(gw, "/appointments/appt-new/cancel", None, PLATFORM_A)).status_code == 202


async def test_a_long_run_of_labelled_records_still_gives_full_pages(gateway: Gateway) -> None:
    labelled = [_appt(f"psy-{i:02}", HIDDEN_PATIENT, f"2026-11-{1 + i // 24:02}T{i % 24:02}:00:00Z", labelled=True)
                for i in range(40)]  # fmt: skip
    await gateway.services.store.apply("clinic-a", [Update("Appointment", a["id"], a) for a in labelled])
    await _put_all(gateway, _appt("plain-z", "Patient/pat-1", "2026-12-20T15:00:00Z"))
    assert await _pages(gateway, "/appointments?limit=1", PLATFORM_A_BASIC) == [["plain-z"]]
    assert sum(len(page) for page in await _pages(gateway, "/appointments?limit=7", PLATFORM_A)) == 41
    feed = await _json(gateway, "/changes?limit=1", PLATFORM_A_BASIC)
    assert [e["record_id"] for e in feed["events"]] == ["plain-z"]
