"""An API process works on at most GATEWAY_MAX_WRITES_IN_FLIGHT FHIR writes at once (issue #13): past the limit a
write is answered 503 with Retry-After before its body is read, reads and health checks go on, and every write the
gateway took is stored once the burst has passed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.metrics import REGISTRY
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, Gateway, running
from tests.gateway.test_large_bodies_socket import served

# What is counted is this process's own requests; the Redis given makes no difference (see tests/conftest.py).
pytestmark = pytest.mark.embedded_only


def patient(rid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Synthetic", "given": [rid]}]}


class HeldBody:
    """A request body that the client sends only when released: the request stays in flight until then."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.reading = asyncio.Event()  # the gateway asked for the body: the request is past the limit's check
        self.release = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reading.set()
        await self.release.wait()
        yield self.body


def shed() -> float:
    return REGISTRY.get_sample_value("gateway_writes_shed_total") or 0.0


@pytest.fixture
def two_at_once(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_writes_in_flight": 2})


async def _hold(gw: Gateway, rid: str) -> tuple[HeldBody, asyncio.Task[Any]]:
    held = HeldBody(json.dumps(patient(rid)).encode())
    task = asyncio.create_task(gw.ehr("PUT", f"/Patient/{rid}", content=held))
    async with asyncio.timeout(10):
        await held.reading.wait()
    return held, task


async def test_a_write_past_the_limit_is_refused_503_and_taken_when_sent_again(
    two_at_once: Settings, clients: ClientsConfig
) -> None:
    async with running(two_at_once, clients, with_worker=False) as gw:
        held = [await _hold(gw, rid) for rid in ("held-1", "held-2")]
        before = shed()

        refused = await gw.ehr("PUT", "/Patient/late-1", json=patient("late-1"))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("late-2"), "request": {"method": "PUT", "url": "Patient/late-2"}}]}  # fmt: skip
        refused_bundle = await gw.ehr("POST", "", json=bundle)
        deleted = await gw.ehr("DELETE", "/Patient/held-1")

        for answer in (refused, refused_bundle, deleted):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "2"
            outcome = answer.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"
            assert "retry later" in outcome["issue"][0]["diagnostics"]
        assert shed() == before + 3
        # Reads, searches and health checks are not writes: they are answered while the writes are held.
        assert (await gw.ehr("GET", "/Patient/late-1")).status_code == 404
        assert (await gw.ehr("GET", "/Patient?name=Synthetic")).status_code == 200
        assert (await gw.http.get("/healthz")).status_code == 200

        for body, _ in held:
            body.release.set()
        assert [(await task).status_code for _, task in held] == [201, 201]
        assert gw.services.edge.writes.now == 0

        # Sent again once the burst has passed, the refused writes are taken; the held ones were stored too.
        assert (await gw.ehr("PUT", "/Patient/late-1", json=patient("late-1"))).status_code == 201
        assert (await gw.ehr("POST", "", json=bundle)).status_code == 200
        for rid in ("held-1", "held-2", "late-1", "late-2"):
            read = await gw.ehr("GET", f"/Patient/{rid}")
            assert read.status_code == 200 and read.json()["meta"]["versionId"] == "1", rid


async def test_writes_that_fail_give_their_place_back(settings: Settings, clients: ClientsConfig) -> None:
    one = settings.model_copy(update={"max_writes_in_flight": 1})
    async with running(one, clients, with_worker=False) as gw:
        for _ in range(3):
            bad = await gw.ehr("PUT", "/Patient/p1", content=b'{"resourceType": "Patient", "id": "p1", "gender": 7}')
            assert bad.status_code == 400, bad.text
        mismatch = await gw.ehr("PUT", "/Patient/p1", json=patient("another"))
        assert mismatch.status_code == 400
        assert gw.services.edge.writes.now == 0
        assert (await gw.ehr("PUT", "/Patient/p1", json=patient("p1"))).status_code == 201


async def test_no_limit_when_set_to_zero(settings: Settings, clients: ClientsConfig) -> None:
    unlimited = settings.model_copy(update={"max_writes_in_flight": 0})
    async with running(unlimited, clients, with_worker=False) as gw:
        held = [await _hold(gw, f"free-{i}") for i in range(5)]
        for body, _ in held:
            body.release.set()
        assert [(await task).status_code for _, task in held] == [201] * 5


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 answer with a Content-Length: status, headers (lower-case names), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _request(method: str, path: str, body: bytes = b"", length: int | None = None) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {EHR_A}\r\n"
        f"Content-Type: application/fhir+json\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


async def test_over_a_socket_a_refused_write_leaves_its_connection_usable(
    settings: Settings, clients: ClientsConfig
) -> None:
    one = settings.model_copy(update={"max_writes_in_flight": 1})
    async with served(one, clients) as base:
        port = int(base.rsplit(":", 1)[1])
        # One write in flight: its headers and half its body sent, the rest held back.
        first = json.dumps(patient("socket-1")).encode()
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", port)
        held_writer.write(_request("PUT", "/fhir/R4/Patient/socket-1", first[:20], length=len(first)))
        await held_writer.drain()
        await asyncio.sleep(0.3)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        second = json.dumps(patient("socket-2")).encode()
        async with asyncio.timeout(20):
            writer.write(_request("PUT", "/fhir/R4/Patient/socket-2", second))
            await writer.drain()
            status, headers, body = await _answer(reader)
            assert status == 503 and headers["retry-after"] == "2", body
            # The refused body was never read; the connection goes on with the next request all the same.
            writer.write(_request("GET", "/fhir/R4/Patient/socket-1"))
            await writer.drain()
            assert (await _answer(reader))[0] == 404

            held_writer.write(first[20:])
            await held_writer.drain()
            assert (await _answer(held_reader))[0] == 201
            writer.write(_request("PUT", "/fhir/R4/Patient/socket-2", second))
            await writer.drain()
            assert (await _answer(reader))[0] == 201
        for w in (writer, held_writer):
            w.close()
