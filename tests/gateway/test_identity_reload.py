"""Credentials without a restart: the clients file read again when it changes or on SIGHUP, all or nothing; a
client removed from it is refused within seconds, its access tokens too."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import CLIENTS, EHR_A, EHR_B, PLATFORM_B, Gateway
from tests.gateway.fixtures import appointment
from tests.gateway.smart_setup import BASE, assertion, smart_clients, token_form
from tests.support import until

NEW_TOKEN = "ehr-token-added-later-0123456789"
REVOKE_WITHIN = 5.0  # seconds: the promise of issue #15 (the file is polled every second)


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)  # the clients come from the file, so the app watches it
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client,
    ):
        yield client


def _write(path: Path, clients: list[dict[str, Any]]) -> None:
    # Write then rename, as an editor or a Kubernetes volume does: a reader never sees half a file.
    spare = path.with_suffix(".tmp")
    spare.write_text(json.dumps({**CLIENTS, "clients": clients}), encoding="utf-8")
    os.replace(spare, path)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


async def _status(client: httpx.AsyncClient, token: str) -> int:
    answer = await client.get("/fhir/R4/Patient", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.json"
    _write(path, [*CLIENTS["clients"], *smart_clients()])
    return path


async def test_a_removed_client_is_refused_within_seconds_with_its_tokens(
    settings: Settings, clients_file: Path
) -> None:
    settings = settings.model_copy(update={"clients_file": clients_file, "public_base_url": BASE})
    async with _serving(settings) as client:
        issued = await client.post("/oauth2/token", data=token_form(assertion()))
        access = issued.json()["access_token"]
        assert await _status(client, access) == 200 and await _status(client, EHR_A) == 200
        assert await _status(client, NEW_TOKEN) == 401
        # The SMART client and the static EHR token of clinic-a leave the file; a new static token joins it.
        kept = [c for c in CLIENTS["clients"] if c["token"] != EHR_A]
        _write(clients_file, [*kept, {"token": NEW_TOKEN, "tenant": "clinic-a", "role": "ehr"}])
        await until(lambda: _refused(client, access), "the revoked access token refused", limit=REVOKE_WITHIN)
        assert await _status(client, EHR_A) == 401 and await _status(client, NEW_TOKEN) == 200
        refused = await client.post("/oauth2/token", data=token_form(assertion()))
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


async def _refused(client: httpx.AsyncClient, token: str) -> bool:
    return await _status(client, token) == 401


async def test_a_bad_file_keeps_the_clients_in_use_and_logs_no_secret(
    settings: Settings, clients_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"clients_file": clients_file})
    secret = "leaked-token-must-not-be-logged-0123456789"
    async with _serving(settings) as client:
        with caplog.at_level(logging.ERROR, logger="gateway.identity"):
            for bad in (
                '{"clients": [{"token": "' + secret + '", "tenant": "clinic-a"',  # cut short
                json.dumps({"clients": [{"token": secret, "tenant": "Not A Tenant!", "role": "ehr"}]}),
                json.dumps({"clients": [{"token": secret, "tenant": "clinic-a", "role": "ehr"}] * 2}),
            ):
                caplog.clear()
                _write_text(clients_file, bad)
                await until(lambda: caplog.records, "the reload refused")
                assert await _status(client, EHR_A) == 200 and await _status(client, secret) == 401
                logged = " ".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
                assert secret not in logged and "clients file not reloaded" in logged


async def test_a_reload_bringing_a_weak_token_is_refused_where_start_would_refuse_it(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    strong = secrets.token_urlsafe(32)
    path = tmp_path / "clients.json"
    _write(path, [{"token": strong, "tenant": "clinic-a", "role": "ehr"}])
    weak = "changeme-ehr-token-0123456789"
    async with _serving(settings.model_copy(update={"clients_file": path})) as client:
        with caplog.at_level(logging.ERROR, logger="gateway.identity"):
            _write(path, [{"token": strong, "tenant": "clinic-a", "role": "ehr"},
                          {"token": weak, "tenant": "clinic-a", "role": "ehr"}])  # fmt: skip
            await until(lambda: caplog.records, "the reload refused")
        assert await _status(client, strong) == 200 and await _status(client, weak) == 401
        logged = " ".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
        assert weak not in logged and "weak or placeholder tokens" in logged


async def test_sighup_reloads_at_once(settings: Settings, clients_file: Path) -> None:
    settings = settings.model_copy(update={"clients_file": clients_file, "clients_reload_seconds": 0})  # no polling
    async with _serving(settings) as client:
        await until(lambda: signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, "the SIGHUP handler")
        _write(clients_file, [*CLIENTS["clients"], {"token": NEW_TOKEN, "tenant": "clinic-a", "role": "ehr"}])
        assert await _status(client, NEW_TOKEN) == 401  # no polling: not read until the signal
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: _ok(client, NEW_TOKEN), "the SIGHUP reload")


async def _ok(client: httpx.AsyncClient, token: str) -> bool:
    return await _status(client, token) == 200


async def test_the_worker_maps_with_the_tenant_settings_of_a_reloaded_file(
    settings: Settings, clients_file: Path
) -> None:
    # clinic-b has no tenant block: its appointments carry no timezone until the file gives it one.
    settings = settings.model_copy(update={"clients_file": clients_file})
    app = create_app(settings, with_worker=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client,
    ):
        gw = Gateway(client, app)

        async def zone_of(rid: str) -> str | None:
            answer = await gw.ehr("PUT", f"/Appointment/{rid}", token=EHR_B, json=appointment(id=rid))
            assert answer.status_code == 201, answer.text
            await gw.drain()
            events = (await gw.platform("/changes?types=appointment.*", token=PLATFORM_B)).json()["events"]
            [record] = [e["record"] for e in events if e["record_id"] == rid]
            zone: str | None = record.get("timezone")
            return zone

        assert await zone_of("before") is None
        tenants = {**CLIENTS["tenants"], "clinic-b": {"vendor": "generic", "timezone": "America/Chicago"}}
        spare = clients_file.with_suffix(".tmp")
        spare.write_text(json.dumps({**CLIENTS, "tenants": tenants}), encoding="utf-8")
        os.replace(spare, clients_file)
        await until(lambda: gw.services.clients.tenant("clinic-b").timezone is not None, "the reload")
        assert await zone_of("after") == "America/Chicago"
