"""The operator console over HTTP: sign-in, who may use it, CSRF, headers, what its pages show and never show.

The same pages in a real browser: ``test_console_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from conformance.outcome import Issue
from gateway.console import hooks
from gateway.console.session import csrf_token
from gateway.errors import BadRequest
from gateway.platform.feed import encode_cursor
from gateway.settings import ClientsConfig, Settings
from gateway.store import rejections
from tests.conftest import EHR_A, EHR_B, PLATFORM_A, Gateway, running
from tests.gateway.console_setup import ADMIN, ADMIN_B, CANARY, PUBLIC, console_clients, console_routes, poison
from tests.gateway.fixtures import appointment
from tests.gateway.test_survey_flow import questionnaire, response
from tests.support import ShiftedClock, until


@pytest.fixture
async def console(settings: Settings, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    clients = ClientsConfig.model_validate(console_clients())
    async with running(settings, clients, with_worker=True, clock=clock) as gw:
        yield gw


def as_admin(token: str = ADMIN) -> dict[str, str]:
    return {"Cookie": f"gw_console={token}"}


async def page(gw: Gateway, path: str, token: str = ADMIN) -> str:
    answer = await gw.http.get(path, headers=as_admin(token))
    assert answer.status_code == 200, answer.text
    return answer.text


async def act(gw: Gateway, path: str, token: str = ADMIN, **fields: str) -> httpx.Response:
    """Submit a console form as the operator signed in with ``token``."""
    return await gw.http.post(path, headers=as_admin(token), data={"csrf": csrf_token(token), **fields})


def cells(html: str) -> list[list[str]]:
    """Return the text of each table row's cells."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, flags=re.S)
    return [[re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


async def sign_in(gw: Gateway, token: str) -> httpx.Response:
    form = await gw.http.get("/console/login")
    nonce = form.cookies["gw_console_login"]
    [csrf] = re.findall(r'name="csrf" value="([^"]+)"', form.text)
    return await gw.http.post(
        "/console/login", data={"token": token, "csrf": csrf}, headers={"Cookie": f"gw_console_login={nonce}"}
    )


# ---- sign-in and who may use the console ----------------------------------------------------------------------


async def test_sign_in_keeps_the_token_in_an_http_only_secure_strict_cookie(console: Gateway) -> None:
    answer = await sign_in(console, ADMIN)
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("gw_console=")]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/console"} <= attributes
    assert "clinic-a" in await page(console, "/console")


async def test_in_development_the_cookie_is_not_secure(settings: Settings) -> None:
    clients = ClientsConfig.model_validate(console_clients())
    async with running(settings.model_copy(update={"development": True}), clients, with_worker=False) as gw:
        answer = await sign_in(gw, ADMIN)
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("gw_console=")]
    assert "secure" not in cookie.lower() and "httponly" in cookie.lower()


async def test_sign_in_refuses_other_roles_unknown_tokens_and_a_forged_form(console: Gateway) -> None:
    assert (await sign_in(console, PLATFORM_A)).status_code == 403
    assert (await sign_in(console, EHR_A)).status_code == 403
    assert (await sign_in(console, "not-a-token-anyone-has-0000")).status_code == 401
    forged = await console.http.post("/console/login", data={"token": ADMIN, "csrf": "x"}, headers={"Cookie": "a=b"})
    assert forged.status_code == 403 and "gw_console=" not in str(forged.headers.get_list("set-cookie"))
    unsigned = await console.http.get("/console")
    assert unsigned.status_code == 303 and unsigned.headers["location"] == "/console/login"


async def test_non_admin_tokens_get_403_on_every_console_route(console: Gateway) -> None:
    routes = console_routes()
    assert set(routes) >= PUBLIC
    guarded = [r for r in routes if r not in PUBLIC and r != ("POST", "/console/login")]
    assert len(guarded) >= 12
    for token in (EHR_A, PLATFORM_A, EHR_B):
        for method, path in guarded:
            form = {"csrf": csrf_token(token), "tenant": "clinic-a", "id": "1-0", "reason": "r", "cursor": "start"}
            for headers in ({"Cookie": f"gw_console={token}"}, {"Authorization": f"Bearer {token}"}):
                answer = await console.http.request(method, path, headers=headers, data=form)
                assert answer.status_code == 403, (method, path, answer.status_code)
        assert (await sign_in(console, token)).status_code == 403  # POST /console/login


async def test_an_admin_without_all_tenants_sees_and_acts_on_its_own_tenant_only(console: Gateway) -> None:
    await console.ehr("PUT", "/Appointment/a1", json=appointment(id="a1"))
    overview = await page(console, "/console", ADMIN_B)
    assert "tenant-clinic-b" in overview and "tenant-clinic-a" not in overview
    assert (await console.http.get("/console?tenant=clinic-a", headers=as_admin(ADMIN_B))).status_code == 404
    refused = await act(console, "/console/dead-letters/replay", ADMIN_B, tenant="clinic-a", all="1")
    assert refused.status_code == 403


async def test_a_form_without_its_csrf_token_is_refused(console: Gateway) -> None:
    for csrf in ("", "0" * 64, csrf_token(PLATFORM_A)):
        answer = await console.http.post(
            "/console/dead-letters/replay", headers=as_admin(), data={"csrf": csrf, "tenant": "clinic-a", "all": "1"}
        )
        assert answer.status_code == 403
    assert (await act(console, "/console/dead-letters/replay", tenant="clinic-a", all="1")).status_code == 303


async def test_every_page_forbids_scripts_and_framing(console: Gateway) -> None:
    for method, path in console_routes():
        if method != "GET" or "/static/" in path:
            continue
        answer = await console.http.get(path, headers=as_admin())
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        assert "<script" not in answer.text and not re.search(r"<[^>]+\s(style|on[a-z]+)=", answer.text)


# ---- what the pages show ----------------------------------------------------------------------------------


async def test_no_page_shows_a_patient_name(console: Gateway) -> None:
    named = {"resourceType": "Patient", "id": "pat-1", "name": [{"family": CANARY.split()[1], "given": [CANARY]}]}
    assert (await console.ehr("PUT", "/Patient/pat-1", json=named)).status_code == 201
    invalid = {**named, "id": "pat-2", "gender": CANARY, "birthDate": CANARY}
    assert (await console.ehr("PUT", "/Patient/pat-2", json=invalid)).status_code == 400
    assert (await console.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())).status_code == 201
    narrative = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{CANARY}</div>'}
    flagged = response("qr-1", [0] * 8 + [2], text=narrative)
    assert (await console.ehr("PUT", "/QuestionnaireResponse/qr-1", json=flagged)).status_code == 201
    dashed = CANARY.replace(" ", "-")
    subscription = {"url": f"https://hooks.example.org/{dashed}?who={dashed}",
                    "events": ["*"], "secret": "whsec-test-0123456789abcdef"}  # fmt: skip
    created = await console.http.post(
        "/platform/v1/subscriptions", json=subscription, headers={"Authorization": f"Bearer {PLATFORM_A}"}
    )
    assert created.status_code == 201
    with poison("Appointment", message=f"cannot map the visit of {CANARY}"):
        await console.ehr("PUT", "/Appointment/poisoned", json=appointment(id="poisoned", description=CANARY))
        await until(lambda: console.services.inbound.dead_letters("clinic-a"), "the dead letter")
    await console.drain()

    shown = {}
    for method, path in console_routes():
        if method == "GET" and "/static/" not in path:
            for query in ("", "?tenant=clinic-a"):
                if not query or path not in ("/console/login", "/console/conformance"):
                    shown[path + query] = await page(console, path + query)
    for text in shown.values():
        assert CANARY.split()[0] not in text and CANARY.split()[1] not in text
    assert "poisoned" in shown["/console/dead-letters"] and "ValueError" in shown["/console/dead-letters"]
    assert "Patient.gender" in shown["/console/validation"] and "hooks.example.org" in shown["/console/webhooks"]
    assert re.search(r'class="risk-flags alert">1<', shown["/console?tenant=clinic-a"])


async def test_refused_resources_are_counted_by_type_and_element_path(console: Gateway) -> None:
    bad = {"resourceType": "Patient", "gender": "sometimes", "birthDate": "1980-13-45"}
    assert (await console.ehr("POST", "/Patient", json=bad)).status_code == 400
    unnamed = {"resourceType": "Patient", "name": [{"given": [7]}]}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": unnamed, "request": {"method": "POST", "url": "Patient"}},
        {"resource": appointment(status="someday"), "request": {"method": "POST", "url": "Appointment"}},
        {"resource": appointment(), "request": {"method": "POST", "url": "Appointment"}},
    ]}  # fmt: skip
    assert (await console.ehr("POST", "", json=batch)).status_code == 200
    rows = cells(await page(console, "/console/validation?tenant=clinic-a"))
    assert ["Patient", "2"] in rows and ["Appointment", "1"] in rows
    assert ["Patient", "Patient.gender", "code-invalid", "1"] in rows
    assert ["Patient", "Patient.birthDate", "value", "1"] in rows
    assert ["Patient", "Patient.name.given", "value", "1"] in rows
    assert ["Appointment", "Appointment.status", "code-invalid", "1"] in rows
    assert await page(console, "/console/validation?tenant=clinic-b")  # nothing counted for another tenant
    assert "Nothing refused" in await page(console, "/console/validation?tenant=clinic-b")
    overview = await page(console, "/console?tenant=clinic-a")
    assert "Resources refused as invalid: 3 in the last hour" in overview


def test_an_element_path_keeps_element_names_only() -> None:
    assert rejections.element_path("Patient", "Patient.name[0].given[1]") == "Patient.name.given"
    assert rejections.element_path("Patient", "Bundle.entry[3].resource.birthDate") == "Patient.birthDate"
    assert rejections.element_path("Bundle", "Bundle.entry[3].request.url") == "Bundle.entry.request.url"
    assert rejections.element_path("Patient", "Patient.John Smith") == "Patient.?"
    assert rejections.element_path("Patient", None) == "Patient"
    with rejections.tally() as noted:
        rejections.note("Patient", [Issue("error", "value", "Patient.x", "d"), Issue("warning", "value", "P.y", "d")])
    assert dict(noted.issues) == {("Patient", "Patient.x", "value"): 1}
    rejections.note("Patient", [Issue("error", "value", "Patient.x", "d")])  # no tally open: nothing happens


async def test_dead_letters_are_replayed_and_discarded_with_an_audit_record(console: Gateway) -> None:
    with poison():
        for rid in ("dl-1", "dl-2", "dl-3"):
            await console.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid))
        await until(lambda: _dead(console, 3), "three dead letters")
    rows = {row[2]: row for row in cells(await page(console, "/console/dead-letters")) if len(row) > 2}
    assert set(rows) == {"dl-1", "dl-2", "dl-3"}
    assert rows["dl-1"][1] == "Appointment" and rows["dl-1"][4] == "ValueError"
    assert rows["dl-1"][5] == str(console.services.settings.max_attempts)

    missing_reason = await act(console, "/console/dead-letters/discard", tenant="clinic-a", id=rows["dl-1"][0])
    assert missing_reason.status_code == 400
    discarded = await act(
        console, "/console/dead-letters/discard", tenant="clinic-a", id=rows["dl-1"][0], reason="sent twice by the EHR"
    )
    assert discarded.status_code == 303
    assert (
        await act(console, "/console/dead-letters/replay", tenant="clinic-a", id=rows["dl-2"][0])
    ).status_code == 303
    await until(lambda: _found(console, "/appointments/dl-2"), "the replayed job's record")
    assert (await act(console, "/console/dead-letters/replay", tenant="clinic-a", all="1")).status_code == 303
    await until(lambda: _dead(console, 0), "no dead letter left")
    await until(lambda: _found(console, "/appointments/dl-3"), "the record of a job replayed with all")
    assert (await console.platform("/appointments/dl-1")).status_code == 404

    audit = {row[2]: row for row in cells(await page(console, "/console?tenant=clinic-a")) if len(row) == 5}
    assert audit["discard"][1] == "ops-1" and audit["discard"][4] == "sent twice by the EHR"
    assert audit["replay"][3] == rows["dl-2"][0] and audit["replay_all"][3] == rows["dl-3"][0]


async def _found(gw: Gateway, path: str) -> bool:
    return (await gw.platform(path)).status_code == 200


async def _dead(gw: Gateway, n: int) -> bool:
    return len(await gw.services.inbound.dead_letters("clinic-a")) == n


async def test_the_overview_counts_what_was_accepted_in_the_last_hour(console: Gateway, clock: ShiftedClock) -> None:
    for i in range(3):
        await console.ehr("PUT", f"/Appointment/o{i}", json=appointment(id=f"o{i}"))
    await console.drain()
    html = await page(console, "/console?tenant=clinic-a")
    assert "Resources accepted: 3 in the last hour" in html
    assert re.search(r'class="workers">1<', html) and re.search(r'class="backlog">0<', html)
    clock.advance(61 * 60)
    assert "Resources accepted: 0 in the last hour" in await page(console, "/console?tenant=clinic-a")


async def test_the_conformance_page_shows_the_latest_report(console: Gateway) -> None:
    html = await page(console, "/console/conformance")
    assert "<h2>Conformance report" in html and "<table>" in html


async def test_webhooks_are_paused_resumed_and_rewound_from_the_console(console: Gateway) -> None:
    created = await console.http.post(
        "/platform/v1/subscriptions",
        json={"url": "https://hooks.example.org/in", "events": ["*"], "secret": "whsec-test-0123456789abcdef"},
        headers={"Authorization": f"Bearer {PLATFORM_A}"},
    )
    sid = created.json()["id"]
    assert (await act(console, "/console/webhooks/pause", tenant="clinic-a", id=sid)).status_code == 303
    sub = await console.services.subscriptions.get("clinic-a", sid)
    assert sub.paused
    status = await console.http.get(
        f"/platform/v1/subscriptions/{sid}", headers={"Authorization": f"Bearer {PLATFORM_A}"}
    )
    assert status.json()["status"] == "paused"
    await until(lambda: _status_on_page(console, sid, "paused"), "the worker to let the subscription go")
    rewound = await act(console, "/console/webhooks/rewind", tenant="clinic-a", id=sid, cursor="start")
    assert rewound.status_code == 303
    assert (await console.services.subscriptions.get("clinic-a", sid)).cursor == "0-0"
    bad = await act(console, "/console/webhooks/rewind", tenant="clinic-a", id=sid, cursor="yesterday")
    assert bad.status_code == 400
    assert (await act(console, "/console/webhooks/resume", tenant="clinic-a", id=sid)).status_code == 303
    assert not (await console.services.subscriptions.get("clinic-a", sid)).paused
    refused = await act(console, "/console/webhooks/rewind", tenant="clinic-a", id=sid, cursor="start")
    assert refused.status_code == 303 and "not moved" in refused.headers.get("set-cookie", "").replace("%20", " ")
    actions = [row[2] for row in cells(await page(console, "/console?tenant=clinic-a")) if len(row) == 5]
    assert actions[:3] == ["resume", "rewind", "pause"]


async def _status_on_page(gw: Gateway, sid: str, status: str) -> Any:
    html = await page(gw, "/console/webhooks")
    return re.search(rf'{sid}</span> <span class="status status-{status}"', html)


async def test_the_stylesheet_and_icon_need_no_token_and_nothing_else_is_served(console: Gateway) -> None:
    css = await console.http.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await console.http.get("/console/static/favicon.svg")).headers["content-type"] == "image/svg+xml"
    assert (await console.http.get("/console/static/..%2Fsession.py")).status_code == 404


def test_replay_from_takes_a_cursor_an_entry_id_an_instant_or_start() -> None:
    assert hooks.feed_position("start") == "0-0"
    assert hooks.feed_position("1767261600000-3") == "1767261600000-3"
    assert hooks.feed_position(encode_cursor("1767261600000-3")) == "1767261600000-3"
    assert hooks.feed_position("2026-01-01T10:00:00Z") == f"{1767261600000 - 1}-{2**64 - 1}"
    for wrong in ("yesterday", "99999999999999999999999-0", "2026-13-01T00:00:00Z"):
        with pytest.raises(BadRequest):
            hooks.feed_position(wrong)


async def test_poll_now_asks_the_poller_that_holds_the_tenant(settings: Settings) -> None:
    bearer = {"type": "bearer", "token": "static-ehr-token-0123456789"}
    ehr = {
        "base_url": "https://ehr.example.org/fhir",
        "auth": bearer,
        "poll": {"types": ["Appointment"], "interval_seconds": 600},
    }
    clients = ClientsConfig.model_validate(console_clients(**{"clinic-a": {"vendor": "generic", "ehr": ehr}}))
    async with running(settings, clients, with_worker=False) as gw:
        keys, redis = gw.services.keys, gw.services.redis
        await redis.set(keys.connector_lease("clinic-a"), "poller-7|abc", px=60_000)
        answer = await act(gw, "/console/connectors/poll", tenant="clinic-a")
        assert answer.status_code == 303 and "a%20poller%20holds%20clinic-a" in answer.headers["set-cookie"]
        assert await redis.get(keys.connector_poll_now("clinic-a")) == b"1"
        html = await page(gw, "/console/connectors")
        assert "held by poller-7" in html and "poll now requested" in html and "breaker closed" in html
        assert "every 10.0 min" in html
        refused = await act(gw, "/console/connectors/poll", tenant="clinic-b")
        assert "clinic-b%20has%20no%20EHR%20connector" in refused.headers["set-cookie"]


async def test_the_connectors_page_lists_what_polling_refused(settings: Settings) -> None:
    base = "https://ehr.example.org/fhir"
    ehr = {"base_url": base, "auth": {"type": "bearer", "token": "static-ehr-token-0123456789"},
           "poll": {"types": ["Appointment"], "since": "2026-01-01T00:00:00Z"}}  # fmt: skip
    clients = ClientsConfig.model_validate(console_clients(**{"clinic-a": {"vendor": "generic", "ehr": ehr}}))
    good = appointment(id="polled-good", meta={"versionId": "1", "lastUpdated": "2026-02-01T10:00:00Z"})
    bad = appointment(id="polled-bad", status="bogus", meta={"versionId": "1", "lastUpdated": "2026-02-01T11:00:00Z"})
    page_of = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in (good, bad)]}
    async with running(settings, clients, with_worker=False) as gw:
        assert "polled-bad" not in await page(gw, "/console/connectors")
        with respx.mock() as ehr_mock:
            ehr_mock.get(f"{base}/Appointment").respond(200, json=page_of)
            report = await gw.services.poller().poll_once("clinic-a")
        assert report is not None and [(s.accepted, s.rejected) for s in report.sweeps] == [(1, 1)]
        html = await page(gw, "/console/connectors")
        [row] = [r for r in cells(html) if any("polled-bad" in c for c in r)]
        assert row[1:3] == ["Appointment/polled-bad", "400"] and row[3]
        assert "polled-good" not in html and "bogus" not in html  # what was refused, never its content
