"""Write-back delivery: the outbound stream consumed as the contract says, the EHR (respx) answering, Redis real."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis

from connectors import Connectors, Delivery, Target
from connectors.retry import backoff
from gateway.store.connection import connect
from gateway.store.keys import Keyspace
from gateway.writebacks.queue import OutboundQueue
from tests.connectors.conftest import BASE, TOKEN_URL, FakeTime, ehr_config, outcome, token_answer
from tests.support import until

TENANT = "clinic-a"
MESSAGE = {
    "resourceType": "Communication", "status": "completed",
    "identifier": [{"system": "urn:fhir-gateway:platform-message", "value": "m-1"}],
    "payload": [{"contentString": "See you Tuesday"}],
}  # fmt: skip
APPOINTMENT = {"resourceType": "Appointment", "status": "cancelled", "participant": [{"status": "declined"}]}


@dataclass
class Outbound:
    redis: Redis
    keys: Keyspace
    delivery: Delivery[Any]
    time: FakeTime

    async def enqueue(self, method: str, resource: dict[str, Any], **state: str) -> str:
        """Create a write-back exactly as the write-back contract says (state hash, then the job)."""
        wid = str(uuid.uuid4())
        fields = {
            "status": "queued", "kind": state.pop("kind", "message"), "created_at": "2026-03-01T12:00:00.000Z",
            "updated_at": "2026-03-01T12:00:00.000Z", "request": "{}", "method": method,
            "resource_type": resource["resourceType"], "resource_id": "", "if_match": "", "if_none_exist": "",
            "resource": json.dumps(resource), "attempts": "0", **state,
        }  # fmt: skip
        await self.redis.hset(self.keys.writeback(TENANT, wid), mapping=fields)
        await self.redis.xadd(self.keys.outbound(TENANT), {"writeback_id": wid, "kind": fields["kind"], "attempt": 0})
        return wid

    async def state(self, wid: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.writeback(TENANT, wid))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def step(self) -> int:
        return await self.delivery.step([TENANT])

    async def waiting(self) -> tuple[int, int, int]:
        """Jobs on the stream, waiting to retry, dead-lettered."""
        return (
            int(await self.redis.xlen(self.keys.outbound(TENANT))),
            int(await self.redis.zcard(self.keys.outbound_retry(TENANT))),
            int(await self.redis.xlen(self.keys.outbound_dead_letters(TENANT))),
        )


@pytest.fixture
async def outbound(redis_url: str, key_prefix: str, key_file: Path, fake_time: FakeTime) -> AsyncIterator[Outbound]:
    redis = connect(redis_url)
    keys = Keyspace(key_prefix)
    config = ehr_config(key_file, max_attempts=3, breaker_failures=50)
    connectors = Connectors({TENANT: Target(TENANT, "generic", config)}, sleep=fake_time.sleep, clock=fake_time.clock)
    queue = OutboundQueue(redis, keys, max_attempts=3, wait=backoff(1, 4), clock=fake_time.clock)
    delivery = Delivery(queue, connectors, consumer="test-consumer", check=None, block_ms=10)
    yield Outbound(redis, keys, delivery, fake_time)
    await connectors.aclose()
    await redis.aclose()


@pytest.fixture
def ehr() -> respx.MockRouter:
    with respx.mock(assert_all_called=False) as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        yield router


async def test_a_conditional_create_arrives_once_despite_two_503s(outbound: Outbound, ehr: respx.MockRouter) -> None:
    route = ehr.post(f"{BASE}/Communication").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(201, headers={"Location": f"{BASE}/Communication/c-77/_history/1", "ETag": 'W/"1"'}),
        ]
    )
    condition = "identifier=urn:fhir-gateway:platform-message|m-1"
    wid = await outbound.enqueue("create", MESSAGE, if_none_exist=condition)
    assert await outbound.step() == 1
    state = await outbound.state(wid)
    assert state["status"] == "delivered" and state["ehr_id"] == "c-77" and state["ehr_version"] == "1"
    assert state["attempts"] == "1" and state["updated_at"] != state["created_at"]
    assert route.call_count == 3
    assert {c.request.headers["if-none-exist"] for c in route.calls} == {condition}
    assert json.loads(route.calls[-1].request.content) == MESSAGE
    assert await outbound.waiting() == (0, 0, 0)  # acknowledged and deleted in the same step


async def test_an_ehr_4xx_fails_the_writeback_with_the_ehrs_issues(outbound: Outbound, ehr: respx.MockRouter) -> None:
    route = ehr.post(f"{BASE}/Communication").respond(422, json=outcome("required", "Communication.recipient"))
    wid = await outbound.enqueue("create", MESSAGE, if_none_exist="identifier=urn:x|1")
    await outbound.step()
    state = await outbound.state(wid)
    assert state["status"] == "failed" and "422" in state["error"]
    assert json.loads(state["outcome"])["issue"][0]["diagnostics"] == "Communication.recipient"
    assert route.call_count == 1
    assert await outbound.waiting() == (0, 0, 0)


async def test_transient_failures_retry_later_then_dead_letter(outbound: Outbound, ehr: respx.MockRouter) -> None:
    route = ehr.post(f"{BASE}/Communication").respond(503)
    wid = await outbound.enqueue("create", MESSAGE, if_none_exist="identifier=urn:x|1")
    await outbound.step()
    state = await outbound.state(wid)
    assert state["status"] == "queued" and "503" in state["error"] and state["attempts"] == "1"
    assert await outbound.waiting() == (0, 1, 0)
    assert route.call_count == 3  # the request's own retries, within one attempt of the job

    await outbound.step()  # not due yet
    assert route.call_count == 3
    for attempt in (2, 3):
        outbound.time.advance(10)
        await outbound.step()
        assert (await outbound.state(wid))["attempts"] == str(attempt)
    state = await outbound.state(wid)
    assert state["status"] == "dead_lettered"
    assert await outbound.waiting() == (0, 0, 1)
    [(_, letter)] = await outbound.redis.xrange(outbound.keys.outbound_dead_letters(TENANT))
    assert letter[b"writeback_id"].decode() == wid and letter[b"attempt"] == b"3"


async def test_a_plain_create_is_not_retried_within_the_request(outbound: Outbound, ehr: respx.MockRouter) -> None:
    route = ehr.post(f"{BASE}/Communication").respond(503)
    wid = await outbound.enqueue("create", MESSAGE)
    await outbound.step()
    assert route.call_count == 1 and (await outbound.state(wid))["status"] == "queued"


async def test_an_update_with_if_match_records_the_new_version(outbound: Outbound, ehr: respx.MockRouter) -> None:
    route = ehr.put(f"{BASE}/Appointment/a-1").mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(200, json={**APPOINTMENT, "id": "a-1"}, headers={"ETag": 'W/"8"'}),
        ]
    )
    wid = await outbound.enqueue("update", APPOINTMENT, kind="appointment_cancel", resource_id="a-1", if_match="7")
    await outbound.step()
    state = await outbound.state(wid)
    assert (state["status"], state["ehr_id"], state["ehr_version"]) == ("delivered", "a-1", "8")
    assert [c.request.headers["if-match"] for c in route.calls] == ['W/"7"', 'W/"7"']
    assert json.loads(route.calls[0].request.content)["id"] == "a-1"


async def test_an_update_without_a_known_version_reads_it_first(outbound: Outbound, ehr: respx.MockRouter) -> None:
    ehr.get(f"{BASE}/Appointment/a-1").respond(200, json={"resourceType": "Appointment", "id": "a-1",
                                                         "meta": {"versionId": "12"}, "status": "booked"})  # fmt: skip
    route = ehr.put(f"{BASE}/Appointment/a-1").respond(200, headers={"ETag": 'W/"13"'})
    wid = await outbound.enqueue("update", APPOINTMENT, kind="appointment_cancel", resource_id="a-1")
    await outbound.step()
    assert route.calls[0].request.headers["if-match"] == 'W/"12"'
    assert (await outbound.state(wid))["ehr_version"] == "13"


async def test_a_412_whose_change_already_landed_is_delivered(outbound: Outbound, ehr: respx.MockRouter) -> None:
    put = ehr.put(f"{BASE}/Appointment/a-1").respond(412, json=outcome("conflict", "version"))
    ehr.get(f"{BASE}/Appointment/a-1").respond(
        200, json={**APPOINTMENT, "id": "a-1", "meta": {"versionId": "8"}, "text": {"status": "generated"}}
    )
    wid = await outbound.enqueue("update", APPOINTMENT, kind="appointment_cancel", resource_id="a-1", if_match="7")
    await outbound.step()
    state = await outbound.state(wid)
    assert (state["status"], state["ehr_version"]) == ("delivered", "8")
    assert put.call_count == 1


async def test_a_412_over_someone_elses_change_fails_with_the_reason(outbound: Outbound, ehr: respx.MockRouter) -> None:
    put = ehr.put(f"{BASE}/Appointment/a-1").respond(412, json=outcome("conflict", "version"))
    ehr.get(f"{BASE}/Appointment/a-1").respond(
        200, json={"resourceType": "Appointment", "id": "a-1", "meta": {"versionId": "9"}, "status": "booked"}
    )
    wid = await outbound.enqueue("update", APPOINTMENT, kind="appointment_cancel", resource_id="a-1", if_match="7")
    await outbound.step()
    state = await outbound.state(wid)
    assert state["status"] == "failed" and "changed since version 7 (now 9)" in state["error"]
    assert json.loads(state["outcome"])["issue"][0]["code"] == "conflict"
    assert put.call_count == 1  # nothing overwritten


async def test_a_settled_writeback_delivered_again_is_only_acknowledged(
    outbound: Outbound, ehr: respx.MockRouter
) -> None:
    route = ehr.post(f"{BASE}/Communication").respond(201, headers={"Location": f"{BASE}/Communication/c-1"})
    wid = await outbound.enqueue("create", MESSAGE, if_none_exist="identifier=urn:x|1")
    await outbound.step()
    # The same job again (as a crash between the EHR's answer and the acknowledgement would leave it).
    await outbound.redis.xadd(outbound.keys.outbound(TENANT), {"writeback_id": wid, "kind": "message", "attempt": 0})
    await outbound.step()
    assert route.call_count == 1
    assert (await outbound.state(wid))["status"] == "delivered"
    assert await outbound.waiting() == (0, 0, 0)


async def test_a_writeback_without_a_resource_fails(outbound: Outbound, ehr: respx.MockRouter) -> None:
    wid = await outbound.enqueue("create", MESSAGE)
    await outbound.redis.hset(outbound.keys.writeback(TENANT, wid), "resource", "not json")
    await outbound.step()
    state = await outbound.state(wid)
    assert state["status"] == "failed" and "no resource" in state["error"]


async def test_a_running_delivery_takes_an_ehr_block_a_reload_adds(
    redis_url: str, key_prefix: str, fake_time: FakeTime, ehr: respx.MockRouter
) -> None:
    # The tenant's EHR block arrives in a reloaded clients file while the worker runs: its queued write-back goes.
    redis, keys = connect(redis_url), Keyspace(key_prefix)
    connectors = Connectors({}, sleep=fake_time.sleep, clock=fake_time.clock)
    queue = OutboundQueue(redis, keys, max_attempts=3, wait=backoff(1, 4), clock=fake_time.clock)
    outbound = Outbound(redis, keys, Delivery(queue, connectors, consumer="c", check=None, block_ms=10), fake_time)
    route = ehr.post(f"{BASE}/Communication").respond(201, headers={"Location": f"{BASE}/Communication/c-1/_history/1"})
    stop = asyncio.Event()
    running = asyncio.create_task(outbound.delivery.run(stop))
    try:
        wid = await outbound.enqueue("create", MESSAGE, if_none_exist="identifier=urn:x|1")
        await asyncio.sleep(0.2)
        assert (await outbound.state(wid))["status"] == "queued" and route.call_count == 0
        connectors.replace({TENANT: Target(TENANT, "generic", ehr_config())})
        await until(lambda: _status_is(outbound, wid, "delivered"), "the delivery with the new connector")
        assert route.call_count == 1
    finally:
        stop.set()
        await running
        await connectors.aclose()
        await redis.aclose()


async def test_stopping_ends_a_retry_wait_and_the_writeback_goes_back_to_its_retry_queue(
    redis_url: str, key_prefix: str, fake_time: FakeTime, ehr: respx.MockRouter
) -> None:
    # The EHR is down and asks for 15 s between attempts: a worker told to stop meanwhile must not wait it out (a
    # pod's grace period is about that long), and the write-back it was retrying must stay queued, not be lost.
    redis, keys = connect(redis_url), Keyspace(key_prefix)
    config = ehr_config(max_attempts=4, backoff_max_seconds=20, breaker_failures=50)
    connectors = Connectors({TENANT: Target(TENANT, "generic", config)})  # real sleeps
    queue = OutboundQueue(redis, keys, max_attempts=3, wait=backoff(1, 4), clock=fake_time.clock)
    outbound = Outbound(redis, keys, Delivery(queue, connectors, consumer="c", check=None, block_ms=10), fake_time)
    route = ehr.post(f"{BASE}/Communication").respond(503, headers={"Retry-After": "15"})
    stop = asyncio.Event()
    running = asyncio.create_task(outbound.delivery.run(stop))
    try:
        wid = await outbound.enqueue("create", MESSAGE, if_none_exist="identifier=urn:x|1")
        await until(lambda: _called(route), "the first attempt")
        stop.set()
        await asyncio.wait_for(asyncio.shield(running), timeout=10)  # not the 15 s wait, nor three of them
        assert route.call_count == 1
        state = await outbound.state(wid)
        assert state["status"] == "queued" and "503" in state["error"] and state["attempts"] == "1"
        assert await outbound.waiting() == (0, 1, 0)  # in the retry queue, for the next worker
    finally:
        stop.set()
        await running
        await connectors.aclose()
        await redis.aclose()


async def _called(route: respx.Route) -> bool:
    return route.call_count > 0


async def _status_is(outbound: Outbound, wid: str, status: str) -> bool:
    return (await outbound.state(wid))["status"] == status


async def test_replaced_ehr_blocks_get_new_clients_and_unchanged_ones_keep_theirs(fake_time: FakeTime) -> None:
    first = {t: Target(t, "generic", ehr_config()) for t in ("a", "b", "c")}
    connectors = Connectors(first, sleep=fake_time.sleep, clock=fake_time.clock)
    kept, changed, removed = (connectors.get(t) for t in ("a", "b", "c"))
    moved = Target("b", "generic", ehr_config(base_url="https://ehr2.example.test/fhir"))
    connectors.replace({"a": first["a"], "b": moved, "d": Target("d", "generic", ehr_config())})
    assert connectors.get("a") is kept  # its pool, circuit breaker and rate limit go on
    assert connectors.get("b") is not changed and str(connectors.get("b").config.base_url).startswith("https://ehr2")  # type: ignore[union-attr]
    assert connectors.get("c") is None and connectors.get("d") is not None
    assert connectors.tenants == ["a", "b", "d"]
    await connectors.aclose()
    for client in (kept, changed, removed):
        assert client is not None and client._http.is_closed  # replaced ones too, once nothing uses them
