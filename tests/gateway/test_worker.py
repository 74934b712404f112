"""The worker and its queue: ordering, retries, dead letters, reclaim, backpressure."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Committer, Plan
from gateway.work.inbound import Job
from gateway.work.worker import Worker
from mappers import registry
from tests.conftest import Gateway, running
from tests.gateway.fixtures import appointment
from tests.gateway.test_treatment_plan_flow import careplan, goal
from tests.support import until


@pytest.fixture
async def worker(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Worker]:
    services = Services.build(settings, clients)
    yield services.worker(name="test-worker")
    await services.aclose()


async def _read_all(worker: Worker, consumer: str = "test-worker") -> list[Job]:
    tenants = ["clinic-a"]
    jobs: list[Job] = []
    while batch := await worker.queue.read(tenants, consumer, 100, 10):
        jobs += batch
    return jobs


async def _drained(worker: Worker) -> bool:
    return await worker.queue.backlog("clinic-a") == 0


async def _events(edge: Gateway) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await edge.platform("/changes")).json()["events"]
    return events


async def test_versions_handled_newest_first_still_yield_every_event_in_version_order(
    edge: Gateway, worker: Worker
) -> None:
    for description in ("one", "two", "three"):
        await edge.ehr("PUT", "/Appointment/ord", json=appointment(id="ord", description=description))
    jobs = await _read_all(worker)
    assert [j.vid for j in jobs] == [1, 2, 3]
    for job in reversed(jobs):
        await worker.handle(job)
    record = (await edge.platform("/appointments/ord")).json()
    assert record["description"] == "three"
    events = await _events(edge)
    assert [e["type"] for e in events] == ["appointment.created", "appointment.updated", "appointment.updated"]
    assert [e["record"]["description"] for e in events] == ["one", "two", "three"]
    assert await worker.queue.backlog("clinic-a") == 0


async def test_each_version_is_classified_against_the_version_it_replaced(edge: Gateway, worker: Worker) -> None:
    moved = {"start": "2026-12-12T09:00:00Z", "end": "2026-12-12T09:30:00Z"}
    await edge.ehr("PUT", "/Appointment/cls", json=appointment(id="cls"))
    await edge.ehr("PUT", "/Appointment/cls", json=appointment(id="cls", description="v2"))
    await edge.ehr("PUT", "/Appointment/cls", json=appointment(id="cls", description="v2", **moved))
    v1, v2, v3 = await _read_all(worker)
    await worker.handle(v1)
    await worker.handle(v3)  # v2 is late: v3's job maps v2 (against v1), then v3 (against v2)
    await worker.handle(v2)  # already applied: only acknowledged
    types = [e["type"] for e in await _events(edge)]
    assert types == ["appointment.created", "appointment.updated", "appointment.rescheduled"]


async def test_a_quick_cancel_then_rebook_never_loses_the_cancellation(edge: Gateway, worker: Worker) -> None:
    await edge.ehr("PUT", "/Appointment/qc", json=appointment(id="qc"))
    await edge.ehr("PUT", "/Appointment/qc", json=appointment(id="qc", status="cancelled"))
    rebooked = {"status": "booked", "start": "2026-12-14T09:00:00Z", "end": "2026-12-14T09:30:00Z"}
    await edge.ehr("PUT", "/Appointment/qc", json=appointment(id="qc", **rebooked))
    v1, v2, v3 = await _read_all(worker)
    await worker.handle(v3, v1)  # one batch holding the first and the last version; the middle one comes later
    await worker.handle(v2)
    types = [e["type"] for e in await _events(edge)]
    assert types[:2] == ["appointment.created", "appointment.cancelled"]
    assert len(types) == 3 and (await edge.platform("/appointments/qc")).json()["status"] == "scheduled"


async def test_two_workers_racing_on_one_resource_publish_each_version_once(
    edge: Gateway, worker: Worker, settings: Settings, clients: ClientsConfig
) -> None:
    for status in ("booked", "cancelled", "booked", "cancelled"):
        await edge.ehr("PUT", "/Appointment/race", json=appointment(id="race", status=status))
    jobs = await _read_all(worker)
    other_services = Services.build(settings, clients)
    other = other_services.worker(name="other-worker")
    try:
        await asyncio.gather(worker.handle(*jobs[::2]), other.handle(*jobs[1::2]))
    finally:
        await other_services.aclose()
    types = [e["type"] for e in await _events(edge)]
    assert types[0] == "appointment.created" and types.count("appointment.cancelled") == 2 and len(types) == 4


async def test_a_redelivered_job_has_no_second_effect(edge: Gateway, worker: Worker) -> None:
    await edge.ehr("PUT", "/Appointment/again", json=appointment(id="again"))
    [job] = await _read_all(worker)
    await worker.handle(job)
    await worker.handle(job)
    assert len(await _events(edge)) == 1


async def test_a_failing_job_retries_then_dead_letters_and_replays(
    edge: Gateway, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = registry.MAPPED["Appointment"]

    def broken(resource: Any, ctx: Any) -> Any:
        raise ValueError("mapper bug")

    monkeypatch.setitem(registry.MAPPED, "Appointment", dataclasses.replace(family, to_platform=broken))
    await edge.ehr("PUT", "/Appointment/poison", json=appointment(id="poison"))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        [letter] = await until(lambda: worker.queue.dead_letters("clinic-a"), "the dead letter")
        assert letter.fields["attempt"] == str(worker.queue.max_attempts)
        assert "mapper bug" in letter.fields["error"]
        assert letter.fields["id"] == "poison"
        assert await worker.queue.backlog("clinic-a") == 0
        assert await _events(edge) == []

        monkeypatch.setitem(registry.MAPPED, "Appointment", family)
        assert await worker.queue.replay("clinic-a", [letter.entry_id]) == [letter.entry_id]
        await until(lambda: _events(edge), "the replayed job's event")
        assert [e["record_id"] for e in await _events(edge)] == ["poison"]
        assert await worker.queue.dead_letters("clinic-a") == []
    finally:
        stop.set()
        await running


async def test_jobs_of_a_crashed_consumer_are_reclaimed_and_applied_once(edge: Gateway, worker: Worker) -> None:
    for i in range(3):
        await edge.ehr("PUT", f"/Appointment/crash{i}", json=appointment(id=f"crash{i}"))
    taken = await _read_all(worker, consumer="crashed-consumer")  # read, never acknowledged
    assert len(taken) == 3
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: _drained(worker), "the reclaimed jobs to be applied")
    finally:
        stop.set()
        await running
    events = await _events(edge)
    assert sorted(e["record_id"] for e in events) == ["crash0", "crash1", "crash2"]
    assert await worker.queue.backlog("clinic-a") == 0


@pytest.fixture
async def tight_edge(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    async with running(settings.model_copy(update={"max_backlog": 3}), clients, with_worker=False) as gw:
        yield gw


async def test_backpressure_answers_503_with_retry_after_and_stores_nothing(tight_edge: Gateway) -> None:
    for i in range(3):
        assert (await tight_edge.ehr("PUT", f"/Appointment/bp{i}", json=appointment(id=f"bp{i}"))).status_code == 201
    refused = await tight_edge.ehr("PUT", "/Appointment/bp3", json=appointment(id="bp3"))
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert (await tight_edge.ehr("GET", "/Appointment/bp3")).status_code == 404


async def test_a_write_no_replica_confirmed_is_not_acknowledged(settings: Settings, clients: ClientsConfig) -> None:
    strict = settings.model_copy(update={"wait_replicas": 1, "wait_timeout_ms": 20})
    async with running(strict, clients, with_worker=False) as gw:
        refused = await gw.ehr("PUT", "/Appointment/rep", json=appointment(id="rep"))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"


async def test_a_batch_acknowledged_together_leaves_no_job_pending_however_large(worker: Worker) -> None:
    queue, redis = worker.queue, worker.queue.redis
    await queue.ensure_group("clinic-a")
    pipe = redis.pipeline(transaction=False)
    for i in range(2_100):  # more entries than one XACK of a batch names
        pipe.xadd(queue.keys.stream("clinic-a"), {"type": "Appointment", "id": f"ack{i}", "vid": "1", "op": "upsert"})
    await pipe.execute()
    jobs = await _read_all(worker)
    assert len(jobs) == 2_100
    plan = Plan()
    queue.settle_all(plan, jobs)
    await Committer(redis).commit(plan)
    assert (await queue.counts("clinic-a")).pending == 0
    assert await queue.backlog("clinic-a") == 0


async def test_a_goal_changed_while_another_worker_maps_its_plan_reaches_the_plan(
    edge: Gateway, worker: Worker, settings: Settings, clients: ClientsConfig
) -> None:
    """One worker maps a plan from its goal; meanwhile the EHR changes the goal and another worker applies the
    change, looking for the records that read the goal before the plan's commit lists the plan. The plan's
    commit conflicts on the goal it read, and the plan is mapped again from the new goal, not left showing the
    old one."""
    await edge.ehr("PUT", "/Goal/g1", json=goal())
    await edge.ehr("PUT", "/CarePlan/cp1", json=careplan())
    first_goal, plan_job = await _read_all(worker)
    await worker.handle(first_goal)
    other_services = Services.build(settings, clients)
    other = other_services.worker(name="other-worker")
    related = worker._records._links.related
    changed: list[dict[str, Any]] = []

    async def goal_changes_meanwhile(*args: Any) -> Any:
        found = await related(*args)
        if not changed:
            changed.append(goal(description={"text": "PHQ-9 score below 10"}))
            await edge.ehr("PUT", "/Goal/g1", json=changed[0])
            await other.handle(*await _read_all(other, "other-worker"))
        return found

    worker._records._links.related = goal_changes_meanwhile  # type: ignore[method-assign]
    try:
        await worker.handle(plan_job)
        while jobs := await _read_all(worker):  # a refresh, had one been queued
            await worker.handle(*jobs)
    finally:
        await other_services.aclose()
    plan = (await edge.platform("/treatment-plans/cp1")).json()
    assert plan["goals"][0]["description"] == "PHQ-9 score below 10"
