"""Scopes per interaction: every FHIR interaction needs its SMART v2 letter on the type, every platform route its
``platform/`` scope; a request without it is 403 with an OperationOutcome naming the scope. Static tokens of the
clients file hold their role's scopes unless they list narrower ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.identity import scopes
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, EHR_A, PLATFORM_A, Gateway, running
from tests.support import ShiftedClock

LETTER_ONLY = {letter: f"scope-only-{letter}-token-0123456789" for letter in scopes.LETTERS}
ALL_BUT = {letter: f"scope-all-but-{letter}-token-0123456789" for letter in scopes.LETTERS}
PLATFORM_ONLY = {s: f"platform-only-{s.split('/')[1]}-token-0123456789" for s in scopes.PLATFORM_SCOPES}
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Synthetic"}]}


def _clients() -> ClientsConfig:
    extra: list[dict[str, Any]] = []
    for letter in scopes.LETTERS:
        others = "".join(c for c in scopes.LETTERS if c != letter)
        extra.append({"token": LETTER_ONLY[letter], "tenant": "clinic-a", "role": "ehr",
                      "scopes": [f"system/Patient.{letter}"]})  # fmt: skip
        extra.append({"token": ALL_BUT[letter], "tenant": "clinic-a", "role": "ehr",
                      "scopes": [f"system/Patient.{others}"]})  # fmt: skip
    for scope, token in PLATFORM_ONLY.items():
        extra.append({"token": token, "tenant": "clinic-a", "role": "platform", "scopes": [scope]})
    return ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *extra]})


@pytest.fixture
async def gw(settings: Settings, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    async with running(settings, _clients(), with_worker=False, clock=clock) as gateway:
        await gateway.ehr("PUT", "/Patient/p1", json=PATIENT)
        yield gateway


PATCH = [{"op": "replace", "path": "/gender", "value": "other"}]
# (interaction, letter, method, path, body, extra headers)
FHIR_MATRIX: list[tuple[str, str, str, str, Any, dict[str, str]]] = [
    ("create", "c", "POST", "/Patient", {"resourceType": "Patient"}, {}),
    ("read", "r", "GET", "/Patient/p1", None, {}),
    ("vread", "r", "GET", "/Patient/p1/_history/1", None, {}),
    ("instance history", "r", "GET", "/Patient/p1/_history", None, {}),
    ("update", "u", "PUT", "/Patient/p1", PATIENT, {}),
    ("patch", "u", "PATCH", "/Patient/p1", PATCH, {"Content-Type": "application/json-patch+json"}),
    ("conditional update", "u", "PUT", "/Patient?identifier=urn:s|1", {"resourceType": "Patient"}, {}),
    ("delete", "d", "DELETE", "/Patient/p1", None, {}),
    ("conditional delete", "d", "DELETE", "/Patient?identifier=urn:s|1", None, {}),
    ("search", "s", "GET", "/Patient", None, {}),
    ("search by POST", "s", "POST", "/Patient/_search", None, {"Content-Type": "application/x-www-form-urlencoded"}),
    ("type history", "s", "GET", "/Patient/_history", None, {}),
    ("transaction entry", "c", "POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}, {}),
    ("batch read entry", "r", "POST", "", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}}]}, {}),
    ("import", "u", "POST", "", {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": PATIENT}]}, {}),
]  # fmt: skip


@pytest.mark.parametrize(("what", "letter", "method", "path", "body", "headers"), FHIR_MATRIX,
                         ids=[row[0] for row in FHIR_MATRIX])  # fmt: skip
async def test_each_fhir_interaction_needs_its_letter(
    gw: Gateway, what: str, letter: str, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    refused = await gw.ehr(method, path, token=ALL_BUT[letter], **kwargs)
    assert refused.status_code == 403, (what, refused.text)
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
    assert f"system/Patient.{letter}" in outcome["issue"][0]["diagnostics"], what
    allowed = await gw.ehr(method, path, token=LETTER_ONLY[letter] if what != "import" else EHR_A, **kwargs)
    assert allowed.status_code not in (401, 403), (what, allowed.text)


async def test_system_history_needs_search_on_every_type(gw: Gateway) -> None:
    refused = await gw.ehr("GET", "/_history", token=LETTER_ONLY["s"])
    assert refused.status_code == 403 and "system/*.s" in refused.text
    assert (await gw.ehr("GET", "/_history")).status_code == 200  # a static ehr token: system/*.cruds


async def test_a_scope_on_one_type_does_not_reach_another(gw: Gateway) -> None:
    refused = await gw.ehr("GET", "/Appointment", token=LETTER_ONLY["s"])
    assert refused.status_code == 403 and "system/Appointment.s" in refused.text
    validate = await gw.ehr("POST", "/Appointment/$validate", token=LETTER_ONLY["c"], json={"resourceType": "x"})
    assert validate.status_code == 403


PLATFORM_MATRIX: list[tuple[str, str, str, Any]] = [
    ("platform/records.read", "GET", "/platform/v1/appointments", None),
    ("platform/records.read", "GET", "/platform/v1/changes", None),
    ("platform/records.read", "GET", "/platform/v1/risk-flags", None),
    ("platform/risk-flags.write", "POST", "/platform/v1/risk-flags/no-such-flag/acknowledge", None),
    ("platform/writebacks.write", "POST", "/platform/v1/messages", {}),
    ("platform/writebacks.read", "GET", "/platform/v1/writebacks/no-such-writeback", None),
    ("platform/webhooks.manage", "GET", "/platform/v1/subscriptions", None),
]


@pytest.mark.parametrize(("scope", "method", "path", "body"), PLATFORM_MATRIX, ids=[r[2] for r in PLATFORM_MATRIX])
async def test_each_platform_route_needs_its_scope(gw: Gateway, scope: str, method: str, path: str, body: Any) -> None:
    for other, token in PLATFORM_ONLY.items():
        answer = await gw.http.request(method, path, json=body, headers=gw.headers(token))
        if other == scope:
            assert answer.status_code not in (401, 403), (scope, answer.text)
        else:
            assert answer.status_code == 403 and scope in answer.json()["issue"][0]["diagnostics"], (other, path)
    full = await gw.http.request(method, path, json=body, headers=gw.headers(PLATFORM_A))
    assert full.status_code not in (401, 403)  # a static platform token keeps every platform scope


async def test_roles_keep_to_their_api(gw: Gateway) -> None:
    assert (await gw.platform("/appointments", token=EHR_A)).status_code == 403
    assert (await gw.ehr("GET", "/Patient/p1", token=PLATFORM_A)).status_code == 403


def test_role_scope_sets_and_grants() -> None:
    assert scopes.registered("ehr", []) == {"system/*.cruds"}
    assert scopes.registered("platform", ["sensitive"]) == {*scopes.PLATFORM_SCOPES, "sensitive"}
    assert scopes.registered("ehr", ["system/Appointment.rs", "sensitive"]) == {"system/Appointment.rs", "sensitive"}
    assert scopes.grant(["system/*.rs"], ["system/*.cruds"]) == ["system/*.rs"]
    assert scopes.grant(["system/Patient.read"], ["system/*.cruds"]) == ["system/Patient.rs"]
    assert scopes.grant(["system/Patient.cruds", "sensitive"], ["system/Patient.rs"]) == ["system/Patient.rs"]
    assert not scopes.valid_scope("system/Patient.sr")  # v2 letters keep their order
