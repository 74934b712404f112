"""Treatment plans through the gateway: a plan's goals arriving after it, completion, deletion, vendor narrative."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, Gateway, running
from tests.gateway.fixtures import post_entry, transaction

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"

CAREPLAN: dict[str, Any] = {
    "resourceType": "CarePlan",
    "id": "cp1",
    "status": "active",
    "intent": "plan",
    "title": "Depression treatment plan",
    "subject": {"reference": "Patient/pat-1"},
    "period": {"start": "2026-03-01"},
    "goal": [{"reference": "Goal/g1", "display": "Mood goal"}],
    "activity": [{"detail": {"kind": "Appointment", "status": "scheduled", "description": "Weekly CBT session"}}],
}
GOAL: dict[str, Any] = {
    "resourceType": "Goal",
    "id": "g1",
    "meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]},
    "lifecycleStatus": "active",
    "achievementStatus": {"coding": [{"system": ACHIEVEMENT, "code": "in-progress"}]},
    "description": {"text": "PHQ-9 score below 5"},
    "subject": {"reference": "Patient/pat-1"},
}


def careplan(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(CAREPLAN) | changes


def goal(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(GOAL) | changes


class Feed:
    """Read the change feed from where the last read stopped."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.cursor: str | None = None

    async def new_events(self) -> list[dict[str, Any]]:
        params = {"cursor": self.cursor} if self.cursor else {}
        page = (await self.gateway.platform("/changes", params=params)).json()
        self.cursor = page["next_cursor"]
        events: list[dict[str, Any]] = page["events"]
        return events


async def put(gateway: Gateway, resource: dict[str, Any]) -> None:
    response = await gateway.ehr("PUT", f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    await gateway.drain()


async def test_a_goal_stored_after_its_plan_updates_the_plan(gateway: Gateway) -> None:
    feed = Feed(gateway)
    await put(gateway, careplan())
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["treatment_plan.created"]
    plan = (await gateway.platform("/treatment-plans/cp1")).json()
    assert plan["goals"][0]["reference"] == {"reference": "Goal/g1", "display": "Mood goal"}
    assert (plan["goals"][0]["resolved"], plan["goals"][0]["description"]) == (False, None)
    assert plan["activities"][0]["status"] == "scheduled"

    await put(gateway, goal())
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["goal.created", "treatment_plan.updated"]
    updated = events[1]["record"]
    assert updated["id"] == "cp1"
    assert updated["goals"][0]["description"] == "PHQ-9 score below 5"
    assert updated["goals"][0]["achievement_status"] == "in_progress"
    # The goal's psychotherapy label now restricts the plan that shows it.
    assert {"system": ACT_CODE, "code": "PSY", "display": None} in updated["security"]
    assert (await gateway.platform("/treatment-plans/cp1")).json()["goals"][0]["resolved"] is True
    assert (await gateway.platform("/goals/g1")).json()["description"] == "PHQ-9 score below 5"

    achieved = {"coding": [{"system": ACHIEVEMENT, "code": "achieved"}]}
    await put(gateway, goal(achievementStatus=achieved))
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["goal.achieved", "treatment_plan.updated"]
    assert events[1]["record"]["goals"][0]["achievement_status"] == "achieved"

    await put(gateway, careplan(status="completed"))
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["treatment_plan.completed"]
    assert events[0]["record"]["status"] == "completed"
    assert events[0]["record"]["goals"][0]["description"] == "PHQ-9 score below 5"


async def test_a_deleted_goal_falls_back_to_its_reference_and_a_deleted_plan_is_announced(gateway: Gateway) -> None:
    feed = Feed(gateway)
    await put(gateway, goal())
    await put(gateway, careplan())
    assert (await gateway.platform("/treatment-plans/cp1")).json()["goals"][0]["resolved"] is True
    await feed.new_events()

    assert (await gateway.ehr("DELETE", "/Goal/g1")).status_code in (200, 204)
    await gateway.drain()
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["goal.deleted", "treatment_plan.updated"]
    assert events[1]["record"]["goals"][0]["resolved"] is False
    assert events[1]["record"]["goals"][0]["reference"]["display"] == "Mood goal"

    assert (await gateway.ehr("DELETE", "/CarePlan/cp1")).status_code in (200, 204)
    await gateway.drain()
    events = await feed.new_events()
    assert [e["type"] for e in events] == ["treatment_plan.deleted"]
    assert events[0]["record"]["deleted"] is True


async def test_a_transaction_with_a_plan_and_its_goal_shows_the_goal_at_once(gateway: Gateway) -> None:
    goal_urn, plan_urn = (
        "urn:uuid:1f0c2d4e-0000-4000-8000-000000000001",
        "urn:uuid:1f0c2d4e-0000-4000-8000-000000000002",
    )
    plan = careplan(goal=[{"reference": goal_urn}])
    del plan["id"]
    new_goal = goal()
    del new_goal["id"]
    response = await gateway.ehr(
        "POST", "", json=transaction(post_entry(plan, plan_urn), post_entry(new_goal, goal_urn))
    )
    assert response.status_code == 200, response.text
    plan_id, goal_id = (e["response"]["location"].split("/")[1] for e in response.json()["entry"])
    await gateway.drain()
    events = await Feed(gateway).new_events()
    assert sorted(e["type"] for e in events) == ["goal.created", "treatment_plan.created"]
    record = (await gateway.platform(f"/treatment-plans/{plan_id}")).json()
    assert record["goals"][0]["reference"]["reference"] == f"Goal/{goal_id}"
    assert record["goals"][0]["description"] == "PHQ-9 score below 5"


@pytest.fixture
async def cerner_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Yield the app for a tenant whose EHR is Oracle Health (Cerner)."""
    config = copy.deepcopy(CLIENTS)
    config["tenants"]["clinic-a"]["vendor"] = "oracle-health"
    async with running(settings, ClientsConfig.model_validate(config), with_worker=True) as gw:
        yield gw


async def test_an_oracle_health_plan_is_described_from_its_narrative(cerner_gateway: Gateway) -> None:
    narrative = '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Description</b>: Weekly CBT &amp; check-ins</p></div>'
    await put(cerner_gateway, careplan(text={"status": "additional", "div": narrative}))
    record = (await cerner_gateway.platform("/treatment-plans/cp1")).json()
    assert record["description"] == "Description: Weekly CBT & check-ins"
    assert record["source"]["vendor"] == "oracle-health"
