"""The worker's job loop: the next batch read and decided while the one before it commits, and never wrong for it.

Each test runs ``Worker.run`` (the loop ``fhir-gateway worker`` runs) with batches of one job, so that every job is
a batch of its own and the overlap is between two jobs the test chose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Plan
from gateway.work.worker import Worker
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment
from tests.gateway.test_treatment_plan_flow import careplan, goal
from tests.support import until


@pytest.fixture
async def worker(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Worker]:
    """A worker reading one job per batch (the job loop's own, not yet running)."""
    services = Services.build(settings.model_copy(update={"worker_concurrency": 1}), clients)
    yield services.worker(name="loop-worker")
    await services.aclose()


@asynccontextmanager
async def working(worker: Worker) -> AsyncIterator[None]:
    """Run the worker's loop for the block, then stop it as the process does (the batch in hand committed)."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def _types(edge: Gateway) -> list[str]:
    return [event["type"] for event in (await edge.platform("/changes")).json()["events"]]


async def _drained(edge: Gateway) -> None:
    await until(lambda: _backlog(edge), "the worker to drain the queue")


async def _backlog(edge: Gateway) -> bool:
    return await edge.services.inbound.backlog("clinic-a") == 0


def _hook(owner: Any, name: str, after: Callable[..., Awaitable[None]]) -> list[Any]:
    """Wrap ``owner.name`` so that ``after(*args)`` runs when it returns; return the calls' arguments."""
    calls: list[Any] = []
    original = getattr(owner, name)

    async def hooked(*args: Any) -> Any:
        result = await original(*args)
        calls.append(args)
        await after(*args)
        return result

    setattr(owner, name, hooked)
    return calls


def _store_goal_once_the_plan_read_it(edge: Gateway, worker: Worker) -> None:
    """Store Goal/g1 right after the worker read, for the plan cp1, the goal it needs (not there yet)."""
    stored: list[str] = []

    async def store_goal(*args: Any) -> None:
        if not stored:
            stored.append("Goal/g1")
            response = await edge.ehr("PUT", "/Goal/g1", json=goal())
            assert response.status_code == 201, response.text

    _hook(worker._records._links, "related", store_goal)


async def _goal_resolved(edge: Gateway) -> bool:
    plan = (await edge.platform("/treatment-plans/cp1")).json()
    return bool(plan["goals"][0]["resolved"])


async def test_the_next_batch_is_decided_while_the_one_before_it_commits(edge: Gateway, worker: Worker) -> None:
    """Redis applies one batch while the worker decides the next: the two take turns no more (a third of a
    drain's time was the worker waiting for its commits)."""
    for name in ("first", "second", "third"):
        await edge.ehr("PUT", f"/Appointment/{name}", json=appointment(id=name, description=name))
    mapped: list[str] = []
    second = asyncio.Event()

    async def note(*args: Any) -> None:
        mapped.append(args[4][0].rid)  # _apply(tenant, family, held, versions, jobs, ...)
        if len(mapped) == 2:
            second.set()

    _hook(worker._records, "_apply", note)
    commit = worker._committer.commit
    seen_at_first_commit: list[list[str]] = []

    async def held_commit(plan: Plan) -> list[str]:
        if not seen_at_first_commit:
            # The first commit's reply waits (3 s at most) for the next job to be mapped meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second.wait(), timeout=3)
            seen_at_first_commit.append(list(mapped))
        return await commit(plan)

    worker._committer.commit = held_commit  # type: ignore[method-assign]
    async with working(worker):
        await _drained(edge)
    assert seen_at_first_commit[0] == ["first", "second"]
    assert await _types(edge) == ["appointment.created"] * 3
    for name in ("first", "second", "third"):
        assert (await edge.platform(f"/appointments/{name}")).json()["description"] == name


async def test_a_version_read_before_the_commit_of_the_one_before_it_is_classified_against_it(
    edge: Gateway, worker: Worker
) -> None:
    """The second version's batch reads the record before the first version's commit writes it: it is decided
    again, against the first version, and publishes one event."""
    await edge.ehr("PUT", "/Appointment/pair", json=appointment(id="pair", description="one"))
    moved = {"start": "2026-12-12T09:00:00Z", "end": "2026-12-12T09:30:00Z"}
    await edge.ehr("PUT", "/Appointment/pair", json=appointment(id="pair", description="one", **moved))
    async with working(worker):
        await _drained(edge)
    assert await _types(edge) == ["appointment.created", "appointment.rescheduled"]
    assert (await edge.platform("/appointments/pair")).json()["start"].startswith("2026-12-12T09:00:00")
    assert (await edge.services.inbound.counts("clinic-a")).dead == 0


async def test_a_goal_stored_while_its_plan_commits_still_reaches_the_plan(edge: Gateway, worker: Worker) -> None:
    """The plan's batch reads its goal (none yet) and the goal is stored before that batch commits, while the
    goal's batch is being decided: the plan's commit conflicts, and the plan is mapped again with its goal."""
    await edge.ehr("PUT", "/CarePlan/cp1", json=careplan())
    _store_goal_once_the_plan_read_it(edge, worker)
    async with working(worker):
        await _drained(edge)
        await until(lambda: _goal_resolved(edge), "the plan to show its goal")
    events = (await edge.platform("/changes")).json()["events"]
    assert [e["type"] for e in events] == ["treatment_plan.created", "goal.created"]
    assert events[0]["record"]["goals"][0]["description"] == "PHQ-9 score below 5"


async def test_a_worker_stopped_with_a_batch_decided_commits_it_before_it_exits(edge: Gateway, worker: Worker) -> None:
    """A rolling restart stops a worker between deciding a batch and committing it: the batch is still applied
    (its jobs would otherwise wait, pending, for another worker to reclaim them)."""
    await edge.ehr("PUT", "/Appointment/last", json=appointment(id="last"))
    stop = asyncio.Event()

    async def stop_now(*args: Any) -> None:
        stop.set()

    _hook(worker._records, "_apply", stop_now)
    await asyncio.wait_for(worker.run(stop), timeout=30)
    assert await _types(edge) == ["appointment.created"]
    counts = await edge.services.inbound.counts("clinic-a")
    assert (counts.queued, counts.pending, counts.backlog) == (0, 0, 0)


async def test_a_goal_read_two_batches_after_its_plan_still_reaches_the_plan(edge: Gateway, worker: Worker) -> None:
    """The loop reads the batch after the next while a commit is on its way: here the goal's batch is read before
    the plan's commit (two batches earlier, held back) is applied, and the plan still shows its goal."""
    await edge.ehr("PUT", "/CarePlan/cp1", json=careplan())
    await edge.ehr("PUT", "/Appointment/between", json=appointment(id="between"))
    _store_goal_once_the_plan_read_it(edge, worker)
    commit = worker._committer.commit
    commits: list[Plan] = []

    async def late_first_commit(plan: Plan) -> list[str]:
        commits.append(plan)
        if len(commits) == 1:
            await asyncio.sleep(0.3)  # the plan's commit reaches Redis after the goal's batch was read
        return await commit(plan)

    worker._committer.commit = late_first_commit  # type: ignore[method-assign]
    async with working(worker):
        await _drained(edge)
        await until(lambda: _goal_resolved(edge), "the plan to show its goal")
    assert (await edge.platform("/treatment-plans/cp1")).json()["goals"][0]["description"] == "PHQ-9 score below 5"


async def test_a_commit_whose_answer_is_lost_is_tried_again_without_a_second_effect(
    edge: Gateway, worker: Worker
) -> None:
    """Redis applies a batch's commit but the connection drops before its answer, while the next batch is being
    decided: the batch's job is tried again and only acknowledged, and the next batch is applied as usual."""
    await edge.ehr("PUT", "/Appointment/lost", json=appointment(id="lost"))
    await edge.ehr("PUT", "/Appointment/next", json=appointment(id="next"))
    commit = worker._committer.commit
    commits: list[Plan] = []

    async def answer_lost(plan: Plan) -> list[str]:
        commits.append(plan)
        written = await commit(plan)
        if len(commits) == 1:
            raise RedisConnectionError("Connection reset by peer")
        return written

    worker._committer.commit = answer_lost  # type: ignore[method-assign]
    async with working(worker):
        await _drained(edge)
    events = (await edge.platform("/changes")).json()["events"]
    assert sorted((e["type"], e["record_id"]) for e in events) == [
        ("appointment.created", "lost"),
        ("appointment.created", "next"),
    ]
    counts = await edge.services.inbound.counts("clinic-a")
    assert (counts.backlog, counts.dead) == (0, 0)
