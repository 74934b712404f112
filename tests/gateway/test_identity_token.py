"""SMART Backend Services: ``POST /oauth2/token`` with client assertions signed by keys generated in the test,
discovery (``/.well-known/smart-configuration``, the CapabilityStatement's ``rest.security``), and the access
token at the FHIR edge."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, EHR_B, Gateway, running
from tests.gateway.smart_setup import (
    BASE,
    EC_CLIENT,
    EC_JWKS_URL,
    EC_KID,
    RSA_CLIENT,
    RSA_KID,
    TOKEN_URL,
    assertion,
    ec_key,
    hs256_with_public_key,
    public_jwk,
    rsa_key,
    smart_clients,
    tampered,
    token_form,
    unsigned,
)
from tests.support import ShiftedClock

PATIENT = {"resourceType": "Patient", "name": [{"family": "Synthetic"}], "gender": "other"}


@pytest.fixture
def smart_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_base_url": BASE})


@pytest.fixture
async def smart(smart_settings: Settings, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *smart_clients()]})
    with respx.mock(assert_all_called=False) as mock:
        mock.get(EC_JWKS_URL).respond(200, json={"keys": [public_jwk(ec_key(), EC_KID)]})
        async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
            yield gw


async def _token(gw: Gateway, form: dict[str, str]) -> httpx.Response:
    return await gw.http.post("/oauth2/token", data=form)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


@pytest.mark.parametrize("client", [RSA_CLIENT, EC_CLIENT])
async def test_a_valid_assertion_gets_a_short_token_that_works_at_the_fhir_edge(smart: Gateway, client: str) -> None:
    answer = await _token(smart, token_form(assertion(client), scope="system/Patient.cruds"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer" and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.cruds"
    assert answer.headers["cache-control"] == "no-store"
    created = await smart.http.post("/fhir/R4/Patient", json=PATIENT, headers=_bearer(body["access_token"]))
    assert created.status_code == 201
    read = await smart.http.get(f"/fhir/R4/Patient/{created.json()['id']}", headers=_bearer(body["access_token"]))
    assert read.status_code == 200 and read.json()["name"][0]["family"] == "Synthetic"
    # The token is the client's tenant's: clinic-a's static EHR token reads what the SMART client wrote.
    other = await smart.ehr("GET", f"/Patient/{created.json()['id']}")
    assert other.status_code == 200


def _now() -> int:
    return int(time.time())


BAD_ASSERTIONS: list[tuple[str, Any, int, str]] = [
    ("expired", lambda: assertion(exp=_now() - 120, iat=_now() - 400), 400, "invalid_grant"),
    ("exp more than 5 minutes ahead", lambda: assertion(exp=_now() + 3600), 400, "invalid_grant"),
    ("iat in the future", lambda: assertion(iat=_now() + 600), 400, "invalid_grant"),
    ("no exp", lambda: assertion(exp=None), 400, "invalid_grant"),
    ("no jti", lambda: assertion(jti=None), 400, "invalid_grant"),
    ("wrong aud", lambda: assertion(aud="https://other.example.org/oauth2/token"), 401, "invalid_client"),
    ("iss is another client", lambda: assertion(iss=EC_CLIENT), 401, "invalid_client"),
    ("sub is another client", lambda: assertion(sub=EC_CLIENT), 401, "invalid_client"),
    ("unknown client", lambda: assertion(iss="nobody", sub="nobody"), 401, "invalid_client"),
    ("unknown kid", lambda: assertion(kid="rsa-2"), 401, "invalid_client"),
    ("alg none", unsigned, 401, "invalid_client"),
    ("HS256 with the public key as secret", hs256_with_public_key, 401, "invalid_client"),
    ("RS256 with an RS384 key", lambda: assertion(alg="RS256"), 401, "invalid_client"),
    ("ES384 claimed for an RSA key", lambda: assertion(alg="ES384", key=ec_key()), 401, "invalid_client"),
    ("signed by another key", lambda: assertion(key=rsa_key(fresh=True)), 401, "invalid_client"),
    ("tampered claims", tampered, 401, "invalid_client"),
    ("not a JWT", lambda: "not.a.jwt", 401, "invalid_client"),
]  # fmt: skip


@pytest.mark.parametrize(("why", "make", "status", "error"), BAD_ASSERTIONS, ids=[c[0] for c in BAD_ASSERTIONS])
async def test_each_bad_assertion_is_refused(smart: Gateway, why: str, make: Any, status: int, error: str) -> None:
    answer = await _token(smart, token_form(make()))
    assert (answer.status_code, answer.json()["error"]) == (status, error), (why, answer.text)
    assert "access_token" not in answer.json() and answer.json()["error_description"]
    assert REASONS[why] in answer.json()["error_description"], why


REASONS = {
    "expired": "expired", "exp more than 5 minutes ahead": "300 s ahead", "iat in the future": "iat",
    "no exp": "exp", "no jti": "jti", "wrong aud": "aud", "iss is another client": "iss and sub",
    "sub is another client": "iss and sub", "unknown client": "no SMART client", "unknown kid": "no key",
    "alg none": "alg", "HS256 with the public key as secret": "alg", "RS256 with an RS384 key": "alg",
    "ES384 claimed for an RSA key": "does not verify ES384", "signed by another key": "signature",
    "tampered claims": "signature", "not a JWT": "not a JWT",
}  # fmt: skip


async def test_a_jti_is_used_once(smart: Gateway) -> None:
    signed = assertion()
    assert (await _token(smart, token_form(signed))).status_code == 200
    replay = await _token(smart, token_form(signed))
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert "jti" in replay.json()["error_description"]


async def test_a_key_with_its_own_alg_pins_it(smart_settings: Settings, clock: ShiftedClock) -> None:
    """A registered RSA key declaring RS256 is never used, even for an RS256 assertion: only RS384/ES384."""
    entry = {"name": "legacy", "tenant": "clinic-a", "role": "ehr",
             "jwks": {"keys": [public_jwk(rsa_key(), "old", alg="RS256")]}}  # fmt: skip
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], entry]})
    async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
        for alg in ("RS256", "RS384"):
            answer = await _token(gw, token_form(assertion("legacy", alg=alg, kid="old")))
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client"), alg


async def test_form_errors_follow_rfc_6749(smart: Gateway) -> None:
    cases = [
        (token_form(assertion(), grant_type="password"), 400, "unsupported_grant_type"),
        ({k: v for k, v in token_form(assertion()).items() if k != "grant_type"}, 400, "invalid_request"),
        (token_form(assertion(), client_assertion_type="urn:other"), 400, "invalid_request"),
        ({k: v for k, v in token_form(assertion()).items() if k != "client_assertion"}, 400, "invalid_request"),
        (token_form(assertion(), scope=""), 400, "invalid_scope"),
        (token_form(assertion(), scope="system/Patient.xyz"), 400, "invalid_scope"),
        (token_form(assertion(), scope="platform/webhooks.manage"), 400, "invalid_scope"),  # an ehr client
    ]
    for form, status, error in cases:
        answer = await _token(smart, form)
        assert (answer.status_code, answer.json()["error"]) == (status, error), form
    as_json = await smart.http.post("/oauth2/token", json=token_form(assertion()))
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")


async def test_granted_scopes_are_what_was_asked_as_far_as_registered(
    smart_settings: Settings, clock: ShiftedClock
) -> None:
    listed = smart_clients(scopes=["system/Appointment.rs", "system/Patient.r"])
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *listed]})
    async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
        answer = await _token(gw, token_form(assertion(), scope="system/*.cruds system/Observation.r launch/patient"))
        assert answer.json()["scope"] == "system/Appointment.rs system/Patient.r"
        headers = _bearer(answer.json()["access_token"])
        assert (await gw.http.get("/fhir/R4/Appointment", headers=headers)).status_code == 200
        refused = await gw.http.post("/fhir/R4/Appointment", json={"resourceType": "Appointment"}, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert "system/Appointment.c" in refused.json()["issue"][0]["diagnostics"]
        searched = await gw.http.get("/fhir/R4/Patient", headers=headers)
        assert searched.status_code == 403 and "system/Patient.s" in searched.text


async def test_a_rotated_key_at_the_jwks_url_is_fetched_again(smart_settings: Settings, clock: ShiftedClock) -> None:
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *smart_clients()]})
    old, new = {"keys": [public_jwk(ec_key(), "retired")]}, {"keys": [public_jwk(ec_key(), EC_KID)]}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(EC_JWKS_URL).mock(side_effect=[httpx.Response(200, json=old), httpx.Response(200, json=new)])
        async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
            assert (await _token(gw, token_form(assertion(EC_CLIENT, kid="retired")))).status_code == 200
            clock.advance(30)  # a key not in the cached set is looked for again, at most every few seconds
            assert (await _token(gw, token_form(assertion(EC_CLIENT)))).status_code == 200
            assert (await _token(gw, token_form(assertion(EC_CLIENT)))).status_code == 200  # cached now
        assert route.call_count == 2


async def test_an_unreachable_jwks_url_refuses_without_a_500(smart_settings: Settings, clock: ShiftedClock) -> None:
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *smart_clients()]})
    with respx.mock(assert_all_called=False) as mock:
        mock.get(EC_JWKS_URL).mock(side_effect=httpx.ConnectError("refused"))
        async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
            answer = await _token(gw, token_form(assertion(EC_CLIENT)))
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


async def test_discovery_names_the_token_endpoint(smart: Gateway) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/R4/.well-known/smart-configuration"):
        config = (await smart.http.get(path)).json()
        assert config["token_endpoint"] == TOKEN_URL
        assert config["grant_types_supported"] == ["client_credentials"]
        assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
        assert {"client-confidential-asymmetric", "permission-v2"} <= set(config["capabilities"])
        assert "system/*.rs" in config["scopes_supported"]
    statement = (await smart.http.get("/fhir/R4/metadata")).json()
    security = statement["rest"][0]["security"]
    [oauth] = security["extension"]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert oauth["extension"] == [{"url": "token", "valueUri": TOKEN_URL}]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


async def test_an_unknown_or_made_up_bearer_token_is_401(smart: Gateway) -> None:
    for token in ("made-up-token-0123456789", "x" * 2000):
        assert (await smart.http.get("/fhir/R4/Patient", headers=_bearer(token))).status_code == 401


async def test_a_token_reaches_its_own_tenant_only(smart: Gateway) -> None:
    theirs = await smart.ehr("POST", "/Patient", token=EHR_B, json=PATIENT)
    assert theirs.status_code == 201
    access = (await _token(smart, token_form(assertion()))).json()["access_token"]
    read = await smart.http.get(f"/fhir/R4/Patient/{theirs.json()['id']}", headers=_bearer(access))
    assert read.status_code == 404  # clinic-a's client: clinic-b's Patient does not exist for it


async def test_a_platform_client_gets_platform_scopes(smart_settings: Settings, clock: ShiftedClock) -> None:
    entry = {"name": "engagement", "tenant": "clinic-a", "role": "platform",
             "jwks": {"keys": [public_jwk(rsa_key(), RSA_KID)]}}  # fmt: skip
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], entry]})
    async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
        answer = await _token(gw, token_form(assertion("engagement"), scope="platform/records.read system/*.rs"))
        assert answer.json()["scope"] == "platform/records.read"  # a platform client holds no FHIR scopes
        headers = _bearer(answer.json()["access_token"])
        assert (await gw.http.get("/platform/v1/appointments", headers=headers)).status_code == 200
        refused = await gw.http.post("/platform/v1/messages", json={}, headers=headers)
        assert refused.status_code == 403 and "platform/writebacks.write" in refused.text


async def test_a_jwks_url_on_an_inward_address_is_never_fetched(smart_settings: Settings, clock: ShiftedClock) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[object] = []

    def serve() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    done = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    inward = f"https://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
    entries = [{**c, "jwks_url": inward} if c["name"] == EC_CLIENT else c for c in smart_clients()]
    clients = ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], *entries]})
    try:
        async with running(smart_settings, clients, with_worker=False, clock=clock) as gw:
            answer = await _token(gw, token_form(assertion(EC_CLIENT)))
        assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")
        assert accepted == [], "the gateway connected to a loopback key-set URL"
    finally:
        done.set()
        thread.join()
        listener.close()
