"""Large bodies do not stall the gateway (issue #12, item 7): they are parsed and validated off the event loop,
a busy gateway sheds them before parsing, and a body that stops arriving is cut off."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import Overloaded
from gateway.fhir.offload import Offload
from gateway.settings import ClientsConfig, Settings
from tests.conftest import Gateway, running

# The Redis given makes no difference here (see tests/conftest.py): run once.
pytestmark = pytest.mark.embedded_only

CONTACT = {
    "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
    "name": {"family": "Synthetic", "given": ["A", "B"]},
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "address": {"line": ["1 Main St"], "city": "Springfield", "period": {"start": "2020-01-01"}},
    "period": {"start": "2020-01-01T10:00:00Z"},
}


def big_patient(family: str, contacts: int = 20_000) -> bytes:
    """Return a valid Patient of several megabytes (synthetic contacts)."""
    body = {"resourceType": "Patient", "name": [{"family": family}], "contact": [CONTACT] * contacts}
    return json.dumps(body).encode()


async def test_health_answers_while_large_bodies_are_processed(gateway: Gateway) -> None:
    bodies = [big_patient(f"Large{i}") for i in range(3)]
    assert len(bodies[0]) > 5_000_000
    big = [asyncio.create_task(gateway.ehr("POST", "/Patient", content=body)) for body in bodies]
    await asyncio.sleep(0.3)  # let them be read and get to parsing and validation
    health = await gateway.http.get("/healthz")
    in_flight = [not task.done() for task in big]
    assert health.status_code == 200
    assert all(in_flight), "/healthz had to wait for the large bodies"
    assert [r.status_code for r in await asyncio.gather(*big)] == [201, 201, 201]


async def test_large_bodies_are_validated_off_the_event_loop(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.fhir.entries as entries_module
    import gateway.fhir.requests as requests_module

    on_loop: list[bool] = []
    validate = requests_module.validate_resource

    def spy(resource: Any, *args: Any, **kwargs: Any) -> Any:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return validate(resource, *args, **kwargs)

    monkeypatch.setattr(requests_module, "validate_resource", spy)
    monkeypatch.setattr(entries_module, "validate_resource", spy)
    assert (await gateway.ehr("POST", "/Patient", content=big_patient("Threaded"))).status_code == 201
    patient = json.loads(big_patient("InBundle", contacts=5_000))
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}]}  # fmt: skip
    assert (await gateway.ehr("POST", "", json=bundle)).status_code == 200
    assert (await gateway.ehr("POST", "/Patient", json={"resourceType": "Patient"})).status_code == 201
    assert on_loop == [False, False, True]  # the two large bodies in a worker thread; a small one inline


@pytest.fixture
def slow_body_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"body_read_timeout_seconds": 0.5})


async def test_a_body_shorter_than_its_content_length_is_cut_off(
    slow_body_settings: Settings, clients: ClientsConfig
) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"resourceType": "Patient", '
        await asyncio.sleep(3600)  # the rest never comes

    async with running(slow_body_settings, clients, with_worker=False) as gw:
        async with asyncio.timeout(10):
            response = await gw.ehr("POST", "/Patient", content=stalls(), headers={"Content-Length": "1000"})
        assert response.status_code == 408
        assert response.json()["issue"][0]["code"] == "timeout"


@pytest.fixture
def tiny_backlog_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_backlog": 1})


async def test_a_full_queue_sheds_a_large_body_before_parsing_it(
    tiny_backlog_settings: Settings, clients: ClientsConfig
) -> None:
    async with running(tiny_backlog_settings, clients, with_worker=False) as gw:
        assert (await gw.ehr("POST", "/Patient", json={"resourceType": "Patient"})).status_code == 201
        not_json = b"{" + b" " * 600_000  # large, and not even JSON: parsing it would answer 400
        response = await gw.ehr("POST", "/Patient", content=not_json)
        assert response.status_code == 503
        assert response.headers["retry-after"]


async def test_large_bodies_past_the_waiting_line_are_refused() -> None:
    offload = Offload(threshold=10, workers=1, waiting=1)
    release = asyncio.Event()

    def work() -> str:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return "done"

    loop = asyncio.get_running_loop()
    held = [asyncio.create_task(offload.run(100, work)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded):
        await offload.run(100, work)
    assert await offload.run(5, lambda: "small bodies are never refused") == "small bodies are never refused"
    release.set()
    assert await asyncio.gather(*held) == ["done", "done"]


async def test_a_full_queue_sheds_a_large_chunked_body_before_parsing_it(
    tiny_backlog_settings: Settings, clients: ClientsConfig
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield b"{"
        yield b" " * 600_000  # large, no Content-Length, and not JSON: parsing it would answer 400

    async with running(tiny_backlog_settings, clients, with_worker=False) as gw:
        assert (await gw.ehr("POST", "/Patient", json={"resourceType": "Patient"})).status_code == 201
        response = await gw.ehr("POST", "/Patient", content=chunked())
        assert response.status_code == 503
        assert response.headers["retry-after"]
