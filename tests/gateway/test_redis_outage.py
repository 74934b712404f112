"""Redis unreachable or frozen: every request path answers 503 with Retry-After (never 500, never 2xx), soon,
and a worker that starts while Redis is down keeps trying until it is back."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.settings import ClientsConfig, Settings
from gateway.store.connection import connect
from tests.conftest import EHR_A, PLATFORM_A, Gateway, running
from tests.gateway.fixtures import appointment
from tests.support import RedisProcess, free_port, until

# The Redis given makes no difference here (see tests/conftest.py): run once.
pytestmark = pytest.mark.embedded_only

EHR_BLOCK = {"base_url": "https://ehr.example.test/fhir", "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
CLIENTS = {
    "clients": [
        {"token": EHR_A, "tenant": "clinic-a", "role": "ehr"},
        {"token": PLATFORM_A, "tenant": "clinic-a", "role": "platform", "scopes": ["sensitive"]},
    ],
    "tenants": {"clinic-a": {"vendor": "generic", "ehr": EHR_BLOCK}},
}
TRANSACTION = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [{"resource": appointment(), "request": {"method": "POST", "url": "Appointment"}}],
}
MESSAGE = {"patient": "Patient/pat-1", "sender": "Patient/pat-1", "body": "hello"}
HOOK = {"url": "https://receiver.example.test/hook", "events": ["appointment.*"], "secret": "s" * 32}

# (method, path, role, body): one of every kind of request that needs Redis
REQUESTS: list[tuple[str, str, str, Any]] = [
    ("POST", "/fhir/R4/Appointment", "ehr", appointment()),
    ("PUT", "/fhir/R4/Appointment/appt-1", "ehr", {**appointment(), "id": "appt-1"}),
    ("GET", "/fhir/R4/Appointment/appt-1", "ehr", None),
    ("GET", "/fhir/R4/Appointment?_id=appt-1", "ehr", None),
    ("DELETE", "/fhir/R4/Appointment/appt-1", "ehr", None),
    ("POST", "/fhir/R4", "ehr", TRANSACTION),
    ("GET", "/platform/v1/changes", "platform", None),
    ("GET", "/platform/v1/changes?wait=1", "platform", None),
    ("GET", "/platform/v1/appointments", "platform", None),
    ("GET", "/platform/v1/appointments/appt-1", "platform", None),
    ("POST", "/platform/v1/messages", "platform", MESSAGE),
    ("GET", "/platform/v1/subscriptions", "platform", None),
    ("POST", "/platform/v1/subscriptions", "platform", HOOK),
]


@pytest.fixture
def outage_clients() -> ClientsConfig:
    return ClientsConfig.model_validate(CLIENTS)


def _settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"redis_url": url})


@pytest.fixture
async def unreachable(settings: Settings, outage_clients: ClientsConfig) -> AsyncIterator[Gateway]:
    closed = _settings(settings, f"redis://127.0.0.1:{free_port()}")
    async with running(closed, outage_clients, with_worker=False) as gw:
        yield gw


@pytest.fixture
async def frozen(settings: Settings, outage_clients: ClientsConfig, own_redis: RedisProcess) -> AsyncIterator[Gateway]:
    async with running(_settings(settings, own_redis.url), outage_clients, with_worker=False) as gw:
        # A connection made while Redis answers, then Redis stops answering (a stalled host, a paused VM).
        assert (await call(gw, "GET", "/fhir/R4/Appointment/appt-1", "ehr", None)).status_code == 404
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        yield gw


async def call(gw: Gateway, method: str, path: str, role: str, body: Any) -> httpx.Response:
    token = EHR_A if role == "ehr" else PLATFORM_A
    headers = {"Authorization": f"Bearer {token}"}
    if role == "ehr":
        headers["Content-Type"] = "application/fhir+json"
    return await gw.http.request(method, path, json=body, headers=headers)


def _assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1, what
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", what
    assert body["issue"][0]["code"] == "transient", what


@pytest.mark.parametrize(("method", "path", "role", "body"), REQUESTS, ids=[f"{r[0]} {r[1]}" for r in REQUESTS])
async def test_an_unreachable_redis_is_503_with_retry_after(
    unreachable: Gateway, method: str, path: str, role: str, body: Any
) -> None:
    _assert_unavailable(await call(unreachable, method, path, role, body), f"{method} {path}")


async def test_a_frozen_redis_is_503_with_retry_after_on_every_path(frozen: Gateway) -> None:
    # All at once, as a stalled Redis meets them in production (and each waits out the socket timeout together).
    answers = await asyncio.gather(*(call(frozen, method, path, role, body) for method, path, role, body in REQUESTS))
    for (method, path, _, _), response in zip(REQUESTS, answers, strict=True):
        _assert_unavailable(response, f"{method} {path}")
    ready = await frozen.http.get("/readyz")
    assert ready.status_code == 503


async def test_a_worker_started_while_redis_is_down_waits_for_it(
    settings: Settings,
    outage_clients: ClientsConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, logger="gateway.worker")
    async with running(_settings(settings, f"redis://127.0.0.1:{port}"), outage_clients, with_worker=True) as gw:
        await until(lambda: len([r for r in caplog.records if "Redis unavailable" in r.getMessage()]) >= 2,
                    "the worker to report that Redis is down, twice")  # fmt: skip
        server = await asyncio.to_thread(RedisProcess, port, tmp_path)
        try:
            created = await call(gw, "POST", "/fhir/R4/Appointment", "ehr", appointment())
            assert created.status_code == 201, created.text
            await gw.drain()
            page = await call(gw, "GET", "/platform/v1/changes", "platform", None)
            assert [e["type"] for e in page.json()["events"]] == ["appointment.created"]
        finally:
            server.stop()


async def test_a_write_a_frozen_redis_does_not_take_fails_within_the_socket_timeout(own_redis: RedisProcess) -> None:
    # A command larger than the sockets' buffers (a large Bundle's commit): its write waits for a Redis that reads
    # nothing. It must give up within the socket timeout, not only the reads, and the half-written connection must
    # not be used again.
    client = connect(own_redis.url, timeout=0.5)
    try:
        await client.set("outage:probe", "1")
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.set("outage:large", b"x" * 64 * 1024 * 1024)
        waited = time.monotonic() - started
        assert waited < 5, f"the write waited {waited:.1f} s for a frozen Redis"
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert await client.get("outage:probe") == b"1"  # a new connection: the half-written one was dropped
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        await client.aclose()
