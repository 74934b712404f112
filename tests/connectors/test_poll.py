"""Incremental pull through the gateway's accept path: pages, cursors, overlap, leases, SSRF, visibility."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from connectors import Connectors, Poller
from gateway.cli import main
from gateway.settings import ClientsConfig, Settings
from gateway.store import rejections
from gateway.store.keys import Keyspace
from tests.conftest import CLIENTS, Gateway, running
from tests.connectors.conftest import BASE, FakeTime
from tests.gateway.fixtures import appointment
from tests.support import until

TENANT = "clinic-a"
SINCE = "2026-01-01T00:00:00Z"


def _appointment(rid: str, updated: str, **changes: Any) -> dict[str, Any]:
    return appointment(id=rid, meta={"versionId": "1", "lastUpdated": updated}, **changes)


def _page(resources: list[dict[str, Any]], *, next_url: str | None = None, sort: bool = True) -> dict[str, Any]:
    self_url = f"{BASE}/Appointment?_count=2" + ("&_sort=_lastUpdated" if sort else "")
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{BASE}/Appointment/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
    ]
    entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information",
                    "code": "informational"}]}, "search": {"mode": "outcome"}})  # fmt: skip
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def clients_file_data(**poll: Any) -> dict[str, Any]:
    ehr = {
        "base_url": BASE, "auth": {"type": "bearer", "token": "static-ehr-token-0123456789"},
        "poll": {"types": ["Appointment"], "since": SINCE, "page_size": 2, "overlap_seconds": 60, **poll},
        "rate_limit_per_second": 1000,
    }  # fmt: skip
    return {**CLIENTS, "tenants": {TENANT: {"vendor": "generic", "ehr": ehr}}}


def clients_with_ehr(**poll: Any) -> ClientsConfig:
    return ClientsConfig.model_validate(clients_file_data(**poll))


class Pulled:
    def __init__(self, gw: Gateway, connectors: Connectors, keys: Keyspace) -> None:
        self.gw = gw
        self.connectors = connectors
        self.keys = keys

    def poller(self, name: str = "p1") -> Poller:
        poller = dataclasses.replace(self.gw.services, connectors=self.connectors).poller()
        poller.token = f"{name}|{name}"
        return poller

    async def cursor(self) -> str | None:
        value = await self.gw.app.state.services.redis.hget(self.keys.connector_cursor(TENANT), "Appointment")
        return value.decode() if value else None

    async def events(self) -> list[dict[str, Any]]:
        await self.gw.drain()
        response = await self.gw.platform("/changes?limit=100")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture
async def pulled(settings: Settings, fake_time: FakeTime) -> AsyncIterator[Pulled]:
    clients = clients_with_ehr()
    async with running(settings, clients, with_worker=True) as gw:
        connectors = Connectors(clients.connector_targets(), sleep=fake_time.sleep)
        yield Pulled(gw, connectors, Keyspace(settings.key_prefix))
        await connectors.aclose()


def _query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


async def test_polled_pages_are_accepted_mapped_and_the_cursor_follows(pulled: Pulled) -> None:
    page2_url = f"{BASE}/Appointment?_getpages=abc&page=2"
    with respx.mock(assert_all_called=True) as ehr:
        first = ehr.get(f"{BASE}/Appointment", params={"_lastUpdated": "gt2025-12-31T23:59:00Z"}).respond(
            200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z"), _appointment("e-2", "2026-02-01T11:00:00Z")],
                            next_url=page2_url),
        )  # fmt: skip
        second = ehr.get(page2_url).respond(200, json=_page([_appointment("e-3", "2026-02-02T09:00:00.5+00:00")]))
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None
    [sweep] = report.sweeps
    assert (sweep.pages, sweep.accepted, sweep.rejected, sweep.error) == (2, 3, 0, None)
    assert first.call_count == second.call_count == 1
    query = _query(first.calls[0].request)
    assert query["_count"] == ["2"] and query["_sort"] == ["_lastUpdated"]
    assert await pulled.cursor() == "2026-02-02T09:00:00.5+00:00"

    events = await pulled.events()
    assert sorted(e["record_id"] for e in events if e["type"] == "appointment.created") == ["e-1", "e-2", "e-3"]

    # The next poll searches from the cursor less the overlap; what comes back again changes nothing.
    with respx.mock() as ehr:
        again = ehr.get(f"{BASE}/Appointment", params={"_lastUpdated": "gt2026-02-02T08:59:00Z"}).respond(
            200, json=_page([_appointment("e-3", "2026-02-02T09:00:00.5+00:00")])
        )
        await pulled.poller().poll_once(TENANT)
    assert again.call_count == 1
    assert len(await pulled.events()) == len(events)


async def test_a_next_link_off_the_base_url_is_refused(pulled: Pulled) -> None:
    with respx.mock(assert_all_called=False) as ehr:
        ehr.get(f"{BASE}/Appointment").respond(
            200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z")], next_url="https://evil.test/steal?page=2",
                            sort=False),
        )  # fmt: skip
        evil = ehr.get(url__startswith="https://evil.test").respond(200, json=_page([]))
        report = await pulled.poller().poll_once(TENANT)
        assert evil.call_count == 0
    assert report is not None and report.sweeps[0].error == "unsafe-url"
    assert report.sweeps[0].accepted == 1
    assert await pulled.cursor() is None  # unsorted: the cursor moves only once the whole sweep is queued


async def test_the_cursor_moves_only_after_its_page_is_queued(pulled: Pulled) -> None:
    async def refuse(tenant: str, resources: list[dict[str, Any]]) -> Sequence[int]:
        raise RuntimeError("backlog full")

    poller = pulled.poller()
    poller._sink = refuse
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z")]))
        report = await poller.poll_once(TENANT)
    assert report is not None and report.sweeps[0].error == "RuntimeError"
    assert await pulled.cursor() is None


async def test_invalid_resources_are_refused_and_do_not_stop_the_feed(pulled: Pulled) -> None:
    bad = _appointment("e-bad", "2026-02-01T12:00:00Z", status="not-a-status")
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z"), bad]))
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None and (report.sweeps[0].accepted, report.sweeps[0].rejected) == (1, 1)
    assert await pulled.cursor() == "2026-02-01T12:00:00Z"  # past the refused one: it would be refused again
    services = pulled.gw.services
    summary = await rejections.summary(services.redis, services.keys, TENANT, services.clock())
    assert summary.resources == [("Appointment", 1)]  # counted for the console's validation-failures page
    assert summary.issues == [("Appointment", "Appointment.status", "code-invalid", 1)]


async def test_an_operators_poll_now_flag_ends_a_running_pollers_wait(pulled: Pulled) -> None:
    flag = pulled.keys.connector_poll_now(TENANT)
    redis = pulled.gw.services.redis
    stop = asyncio.Event()
    with respx.mock() as ehr:
        search = ehr.get(f"{BASE}/Appointment").respond(200, json=_page([]))
        poller = pulled.poller()
        poller.connectors.clients[TENANT].config.poll.interval_seconds = 3600  # type: ignore[union-attr]
        running = asyncio.create_task(poller.run(stop))
        try:
            await until(lambda: search.call_count == 1, "the first poll")
            await redis.set(flag, "1")
            await until(lambda: search.call_count == 2, "the poll the flag asked for", limit=10)
            assert not await redis.exists(flag)
        finally:
            stop.set()
            await running


async def test_one_poller_per_tenant_holds_the_lease(pulled: Pulled) -> None:
    first, second = pulled.poller("p1"), pulled.poller("p2")
    assert await first.take(TENANT)
    assert await first.take(TENANT)  # renewing is taking again
    assert await second.poll_once(TENANT) is None
    await first.release(TENANT)
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page([]))
        assert await second.poll_once(TENANT) is not None


async def test_a_poller_that_lost_its_lease_stops_without_moving_the_cursor(pulled: Pulled) -> None:
    poller = pulled.poller("p1")
    redis = pulled.gw.app.state.services.redis
    sink = poller._sink

    async def lose_lease_after(tenant: str, resources: list[dict[str, Any]]) -> Sequence[int]:
        statuses = await sink(tenant, resources)
        await redis.set(pulled.keys.connector_lease(TENANT), "p2|other")
        return statuses

    poller._sink = lose_lease_after
    page2 = f"{BASE}/Appointment?page=2"
    with respx.mock(assert_all_called=False) as ehr:
        ehr.get(f"{BASE}/Appointment").respond(
            200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z")], next_url=page2, sort=False)
        )
        second = ehr.get(page2).respond(200, json=_page([]))
        report = await poller.poll_once(TENANT)
        assert second.call_count == 0
    assert report is not None and report.sweeps[0].error == "lease-lost"
    assert await pulled.cursor() is None


async def test_status_and_metrics_show_the_connector(
    pulled: Pulled, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # The poller records its calls through the same observer the worker and the CLI use.
    from connectors import RedisObserver

    redis = pulled.gw.app.state.services.redis
    for client in pulled.connectors.clients.values():
        client.observer = RedisObserver(redis, pulled.keys.connector_status(TENANT))
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z")])),
            ]
        )
        await pulled.poller().poll_once(TENANT)

    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps(clients_file_data()))
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(clients_file))
    assert await asyncio.to_thread(main, ["connectors", "status"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    status = json.loads(line)
    assert status["tenant"] == TENANT and status["vendor"] == "generic" and status["auth"] == "bearer"
    assert status["circuit"] == "closed" and status["retries"] == 1 and status["errors"] == 1
    assert status["last_success"] and status["last_error"] and status["last_error_kind"] == "transient"
    assert status["cursors"] == {"Appointment": "2026-02-01T10:00:00Z"} and status["last_poll"]
    assert "static-ehr-token" not in line

    metrics = (await pulled.gw.http.get("/metrics")).text
    assert 'gateway_connector_poll_cursor_timestamp_seconds{tenant="clinic-a",type="Appointment"} 1.7699' in metrics
    assert 'gateway_connector_calls{kind="retries",tenant="clinic-a"} 1.0' in metrics
    assert 'gateway_connector_circuit_state{state="closed",tenant="clinic-a"} 1.0' in metrics
    assert 'gateway_connector_last_success_timestamp_seconds{tenant="clinic-a"}' in metrics


async def _connectors_status(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps(clients_file_data()))
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(clients_file))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["connectors", "status"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    status: dict[str, Any] = json.loads(line)
    return status


async def test_one_resource_that_fails_to_import_is_a_dead_letter_and_the_poller_goes_on(
    pulled: Pulled, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # A lone surrogate in a string: the JSON parses, but the resource cannot be stored as UTF-8.
    poison = _appointment("e-poison", "2026-02-01T11:00:00Z", description="Dr. \ud800 note SECRET-CANARY")
    page1 = [_appointment("e-1", "2026-02-01T10:00:00Z"), poison]
    page2_url = f"{BASE}/Appointment?_getpages=abc&page=2"
    with respx.mock(assert_all_called=False) as ehr:
        ehr.get(page2_url).respond(200, json=_page([_appointment("e-2", "2026-02-01T12:00:00Z")]))
        body = json.dumps(_page(page1, next_url=page2_url)).encode()  # ASCII JSON, the surrogate escaped
        ehr.get(f"{BASE}/Appointment").respond(200, content=body, headers={"Content-Type": "application/fhir+json"})
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None
    [sweep] = report.sweeps
    assert (sweep.pages, sweep.accepted, sweep.rejected, sweep.dead_letters, sweep.error) == (2, 2, 1, 1, None)
    assert await pulled.cursor() == "2026-02-01T12:00:00Z"  # the cursor went past the bad one
    created = sorted(e["record_id"] for e in await pulled.events() if e["type"] == "appointment.created")
    assert created == ["e-1", "e-2"]

    status = await _connectors_status(settings, tmp_path, monkeypatch, capsys)
    assert status["dead_letters"] == 1
    [letter] = status["recent_dead_letters"]
    assert (letter["type"], letter["id"]) == ("Appointment", "e-poison")
    assert 400 <= letter["status"] < 600 and letter["error"] and letter["at"]
    assert "SECRET-CANARY" not in json.dumps(status) and "Dr." not in json.dumps(status)  # no content, ever
    metrics = (await pulled.gw.http.get("/metrics")).text
    assert 'gateway_connector_poll_dead_letters{tenant="clinic-a"} 1.0' in metrics


async def test_any_error_storing_one_polled_resource_leaves_the_others_and_the_cursor_going(
    pulled: Pulled, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pulled.gw.services.store
    real_apply = store.apply

    async def apply(tenant: str, operations: list[Any]) -> Any:
        if any(getattr(op, "rid", None) == "e-cursed" for op in operations):
            raise KeyError("a bug met one resource")
        return await real_apply(tenant, operations)

    monkeypatch.setattr(store, "apply", apply)
    page = [_appointment("e-1", "2026-02-01T10:00:00Z"), _appointment("e-cursed", "2026-02-01T11:00:00Z"),
            _appointment("e-2", "2026-02-01T12:00:00Z")]  # fmt: skip
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page(page))
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None
    [sweep] = report.sweeps
    assert (sweep.accepted, sweep.rejected, sweep.dead_letters, sweep.error) == (2, 1, 1, None)
    assert await pulled.cursor() == "2026-02-01T12:00:00Z"
    letters = await pulled.gw.services.redis.lrange(pulled.keys.connector_dead_letters(TENANT), 0, -1)
    [letter] = [json.loads(x) for x in letters]
    assert (letter["type"], letter["id"], letter["status"]) == ("Appointment", "e-cursed", 500)
    assert "a bug met" not in letter["error"]  # the error's class, not its message


async def test_backpressure_still_keeps_the_whole_page_for_later(
    pulled: Pulled, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.errors import Overloaded

    async def apply(tenant: str, operations: list[Any]) -> Any:
        raise Overloaded("busy", retry_after=5)

    monkeypatch.setattr(pulled.gw.services.store, "apply", apply)
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page([_appointment("e-1", "2026-02-01T10:00:00Z")]))
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None and report.sweeps[0].error == "Overloaded" and report.sweeps[0].dead_letters == 0
    assert await pulled.cursor() is None


async def test_a_resource_that_crashes_validation_is_found_and_set_aside_alone(
    pulled: Pulled, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.fhir import entries

    real = entries.validate_resource

    def validate(resource: dict[str, Any]) -> Any:
        if "e-crash" in json.dumps(resource):
            raise RecursionError("the validator met something it cannot handle")
        return real(resource)

    monkeypatch.setattr(entries, "validate_resource", validate)
    page = [_appointment("e-1", "2026-02-01T10:00:00Z"), _appointment("e-crash", "2026-02-01T11:00:00Z"),
            _appointment("e-2", "2026-02-01T12:00:00Z")]  # fmt: skip
    with respx.mock() as ehr:
        ehr.get(f"{BASE}/Appointment").respond(200, json=_page(page))
        report = await pulled.poller().poll_once(TENANT)
    assert report is not None
    [sweep] = report.sweeps
    assert (sweep.accepted, sweep.rejected, sweep.dead_letters, sweep.error) == (2, 1, 1, None)
    assert await pulled.cursor() == "2026-02-01T12:00:00Z"
    letters = await pulled.gw.services.redis.lrange(pulled.keys.connector_dead_letters(TENANT), 0, -1)
    assert [(x["id"], x["status"], x["error"]) for x in map(json.loads, letters)] == [
        ("e-crash", 500, "failed: RecursionError")
    ]


async def test_a_running_poller_takes_the_ehr_blocks_of_a_reloaded_clients_file(
    settings: Settings, fake_time: FakeTime
) -> None:
    plain = ClientsConfig.model_validate(CLIENTS)  # no tenant has an EHR block yet
    async with running(settings, plain, with_worker=True) as gw:
        services = dataclasses.replace(gw.services, connectors=Connectors({}, sleep=fake_time.sleep))
        poller, stop = services.poller(), asyncio.Event()
        moved = "https://ehr2.example.test/fhir"
        with respx.mock() as ehr:
            first = ehr.get(f"{BASE}/Appointment").respond(
                200, json=_page([_appointment("polled-1", "2026-02-01T12:00:00Z")])
            )
            second = ehr.get(f"{moved}/Appointment").respond(200, json=_page([]))
            task = asyncio.create_task(poller.run(stop))
            try:
                services.apply_clients(clients_with_ehr())  # the block arrives: the tenant is polled
                await until(lambda: first.call_count >= 1, "the first poll of the added tenant")
                changed = clients_file_data()
                changed["tenants"][TENANT]["ehr"]["base_url"] = moved
                services.apply_clients(ClientsConfig.model_validate(changed))  # the block moves: the new EHR is
                await until(lambda: second.call_count >= 1, "the poll of the changed block")
                calls = first.call_count
                await asyncio.sleep(0.3)
                assert first.call_count == calls  # and the old one no longer
            finally:
                stop.set()
                await task
                await services.connectors.aclose()
        await gw.drain()
        events = (await gw.platform("/changes?limit=100")).json()["events"]
        assert [e["record_id"] for e in events] == ["polled-1"]
