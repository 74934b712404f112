"""SMART Backend Services: the client assertion verifies with the key the gateway publishes at its JWKS URL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt import PyJWKSet

from connectors import ClientAssertion, ConfigError, SmartBackendAuth, load_signing_key
from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, running
from tests.connectors.conftest import CLIENT_ID, TOKEN_URL, ehr_config, smart_auth
from tests.support import until


def _clients(*tenants: tuple[str, dict[str, Any]]) -> ClientsConfig:
    config = {**CLIENTS, "tenants": {name: {"vendor": "generic", "ehr": ehr} for name, ehr in tenants}}
    return ClientsConfig.model_validate(config)


async def _published(settings: Settings, clients: ClientsConfig) -> dict[str, Any]:
    async with running(settings, clients, with_worker=False) as gw:
        response = await gw.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_the_client_assertion_verifies_with_the_published_jwks_key(
    settings: Settings, tmp_path: Path, rsa_pem: bytes, ec_pem: bytes, alg: str
) -> None:
    key_file = tmp_path / f"{alg}.pem"
    key_file.write_bytes(rsa_pem if alg == "RS384" else ec_pem)
    ehr = ehr_config(key_file, auth=smart_auth(key_file, alg=alg, kid=f"kid-{alg}")).model_dump(mode="json")
    document = await _published(settings, _clients(("clinic-a", ehr)))

    [jwk] = document["keys"]
    assert jwk["kid"] == f"kid-{alg}" and jwk["alg"] == alg and jwk["use"] == "sig"
    assert "d" not in jwk and "p" not in jwk  # the public half only

    auth = SmartBackendAuth.model_validate(smart_auth(key_file, alg=alg, kid=f"kid-{alg}"))
    assertion = ClientAssertion(auth, load_signing_key(auth))
    token, other = assertion.sign(), assertion.sign()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": f"kid-{alg}", "typ": "JWT"}

    key = PyJWKSet.from_dict(document)[header["kid"]]
    claims = jwt.decode(
        token, key.key, algorithms=[alg], audience=TOKEN_URL, issuer=CLIENT_ID,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "verify_signature": True},
    )  # fmt: skip
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - claims["iat"] <= 300  # at most five minutes ahead
    checked_at = time.time()  # the claim is about the clock, not a measure of speed
    assert checked_at - 600 < claims["iat"] < checked_at + 600
    assert claims["jti"] != jwt.decode(other, options={"verify_signature": False})["jti"]
    # A token signed by another key, or for another audience, does not verify.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=[alg], audience="https://other.test/token")


async def test_unreadable_keys_are_left_out_and_the_rest_published(
    settings: Settings, tmp_path: Path, rsa_pem: bytes
) -> None:
    good = tmp_path / "good.pem"
    good.write_bytes(rsa_pem)
    missing = tmp_path / "missing.pem"
    ehr_good = ehr_config(good).model_dump(mode="json")
    ehr_bad = ehr_config(good, auth=smart_auth(missing, kid="gone")).model_dump(mode="json")
    document = await _published(settings, _clients(("clinic-a", ehr_good), ("clinic-b", ehr_bad)))
    assert [k["kid"] for k in document["keys"]] == ["gw-2026-01"]


def test_a_key_that_does_not_fit_the_algorithm_is_refused(tmp_path: Path, rsa_pem: bytes, ec_pem: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(ec_pem)
    with pytest.raises(ConfigError, match="RS384"):
        load_signing_key(SmartBackendAuth.model_validate(smart_auth(path, alg="RS384")))
    path.write_bytes(rsa_pem)
    with pytest.raises(ConfigError, match="ES384"):
        load_signing_key(SmartBackendAuth.model_validate(smart_auth(path, alg="ES384")))
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError):
        load_signing_key(SmartBackendAuth.model_validate(smart_auth(path)))


def test_a_key_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, rsa_pem: bytes) -> None:
    monkeypatch.setenv("EHR_PRIVATE_KEY", rsa_pem.decode())
    auth = SmartBackendAuth.model_validate(
        {**smart_auth(Path("unused")), "private_key_file": None, "private_key_env": "EHR_PRIVATE_KEY"}
    )
    assert load_signing_key(auth).key_size == 2048  # type: ignore[union-attr]


async def test_a_reload_adding_a_smart_ehr_block_publishes_its_key(
    settings: Settings, tmp_path: Path, rsa_pem: bytes
) -> None:
    key_file = tmp_path / "ehr.pem"
    key_file.write_bytes(rsa_pem)
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(CLIENTS), encoding="utf-8")
    app = create_app(settings.model_copy(update={"clients_file": path}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client,
    ):
        assert (await client.get("/.well-known/jwks.json")).json()["keys"] == []
        ehr = ehr_config(key_file, auth=smart_auth(key_file, kid="kid-added")).model_dump(mode="json")
        spare = tmp_path / "clients.tmp"
        spare.write_text(json.dumps({**CLIENTS, "tenants": {"clinic-a": {"ehr": ehr}}}), encoding="utf-8")
        spare.replace(path)

        async def published() -> list[str]:
            return [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]

        await until(lambda: _equal(published(), ["kid-added"]), "the added EHR block's key published")


async def _equal(value: Any, expected: Any) -> bool:
    return await value == expected
