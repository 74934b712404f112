"""The platform API: appointment records, queries and the resumable change feed."""

from __future__ import annotations

import asyncio

from tests.conftest import Gateway
from tests.gateway.fixtures import appointment
from tests.support import ShiftedClock


async def test_feed_classifies_the_appointment_lifecycle(gateway: Gateway) -> None:
    versions = [
        appointment(id="life"),
        appointment(id="life", start="2026-12-11T09:00:00-05:00", end="2026-12-11T09:30:00-05:00"),
        appointment(
            id="life",
            start="2026-12-11T09:00:00-05:00",
            end="2026-12-11T09:30:00-05:00",
            description="Bring forms",
        ),
        appointment(id="life", status="cancelled", start="2026-12-11T09:00:00-05:00", end="2026-12-11T09:30:00-05:00"),
    ]
    for version in versions:
        await gateway.ehr("PUT", "/Appointment/life", json=version)
        await gateway.drain()
    events = (await gateway.platform("/changes")).json()["events"]
    assert [e["type"] for e in events] == [
        "appointment.created",
        "appointment.rescheduled",
        "appointment.updated",
        "appointment.cancelled",
    ]
    assert len({e["id"] for e in events}) == 4
    assert events[1]["record"]["start"] == "2026-12-11T14:00:00Z"


async def test_feed_resumes_from_any_cursor_and_clamps_limit(gateway: Gateway) -> None:
    for i in range(5):
        await gateway.ehr("PUT", f"/Appointment/f{i}", json=appointment(id=f"f{i}"))
    await gateway.drain()
    first = (await gateway.platform("/changes?limit=2")).json()
    assert len(first["events"]) == 2
    rest = (await gateway.platform(f"/changes?cursor={first['next_cursor']}&limit=100000")).json()
    ids = [e["record_id"] for e in first["events"] + rest["events"]]
    assert sorted(ids) == [f"f{i}" for i in range(5)]
    again = (await gateway.platform(f"/changes?cursor={first['events'][0]['cursor']}")).json()
    assert [e["record_id"] for e in again["events"]] == ids[1:]
    empty = (await gateway.platform(f"/changes?cursor={rest['next_cursor']}")).json()
    assert empty == {"events": [], "next_cursor": rest["next_cursor"]}
    assert (await gateway.platform("/changes?cursor=garbage")).status_code == 400


async def test_long_poll_returns_when_an_event_arrives(gateway: Gateway) -> None:
    start = (await gateway.platform("/changes")).json()["next_cursor"]
    waiting = asyncio.create_task(gateway.platform(f"/changes?cursor={start}&wait=10"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await gateway.ehr("PUT", "/Appointment/lp", json=appointment(id="lp"))
    page = (await asyncio.wait_for(waiting, timeout=10)).json()
    assert [e["record_id"] for e in page["events"]] == ["lp"]


async def test_appointment_queries(gateway: Gateway) -> None:
    rows = [
        ("q1", "Patient/a", "2026-12-01T10:00:00Z", "booked"),
        ("q2", "Patient/a", "2026-12-05T10:00:00Z", "cancelled"),
        ("q3", "Patient/b", "2026-12-03T10:00:00Z", "booked"),
    ]
    for rid, patient, start, status in rows:
        body = appointment(id=rid, start=start, end=start.replace("10:00", "10:30"), status=status,
                           participant=[{"actor": {"reference": patient}, "status": "accepted"}])  # fmt: skip
        await gateway.ehr("PUT", f"/Appointment/{rid}", json=body)
    await gateway.drain()
    one = (await gateway.platform("/appointments/q1")).json()
    assert one["status"] == "scheduled" and one["source"]["fhir_id"] == "q1"
    by_patient = (await gateway.platform("/appointments?patient=Patient/a")).json()
    assert [r["id"] for r in by_patient["records"]] == ["q1", "q2"]
    in_range = (await gateway.platform("/appointments?from=2026-12-02&to=2026-12-06")).json()
    assert [r["id"] for r in in_range["records"]] == ["q3", "q2"]
    scheduled = (await gateway.platform("/appointments?status=scheduled")).json()
    assert [r["id"] for r in scheduled["records"]] == ["q1", "q3"]
    paged = (await gateway.platform("/appointments?limit=2")).json()
    assert len(paged["records"]) == 2 and paged["next_cursor"]
    rest = (await gateway.platform(f"/appointments?limit=2&cursor={paged['next_cursor']}")).json()
    assert [r["id"] for r in rest["records"]] == ["q2"] and rest["next_cursor"] is None
    assert (await gateway.platform("/appointments/none")).status_code == 404


async def test_schema_publishes_every_record_type(gateway: Gateway) -> None:
    schemas = (await gateway.platform("/schema")).json()
    assert "appointment" in schemas
    assert "status" in schemas["appointment"]["properties"]
    assert (await gateway.platform("/nonsense/1")).status_code == 404


async def test_updated_since_reports_changes_and_deletions(gateway: Gateway, clock: ShiftedClock) -> None:
    await gateway.ehr("PUT", "/Appointment/u1", json=appointment(id="u1"))
    await gateway.ehr("PUT", "/Appointment/u2", json=appointment(id="u2"))
    await gateway.drain()
    mark = (await gateway.platform("/appointments/u2")).json()["source"]["last_updated"]
    clock.advance(1)
    await gateway.ehr("DELETE", "/Appointment/u1")
    await gateway.ehr("PUT", "/Appointment/u3", json=appointment(id="u3"))
    await gateway.drain()
    changed = (await gateway.platform(f"/appointments?updated_since={mark}")).json()["records"]
    assert sorted((r["id"], r["deleted"]) for r in changed) == [("u1", True), ("u3", False)]
    live = (await gateway.platform("/appointments")).json()["records"]
    assert sorted(r["id"] for r in live) == ["u2", "u3"]


async def test_feed_filters_by_event_type_and_still_moves_on(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/t1", json=appointment(id="t1"))
    await gateway.ehr("PUT", "/Appointment/t1", json=appointment(id="t1", status="cancelled"))
    await gateway.drain()
    cancelled = (await gateway.platform("/changes?types=appointment.cancelled")).json()
    assert [e["type"] for e in cancelled["events"]] == ["appointment.cancelled"]
    wildcard = (await gateway.platform("/changes?types=appointment.*")).json()
    assert len(wildcard["events"]) == 2
    nothing = (await gateway.platform("/changes?types=message.*")).json()
    assert nothing["events"] == []
    after = (await gateway.platform(f"/changes?cursor={nothing['next_cursor']}")).json()
    assert after["events"] == []  # the filtered-out events were passed over, not handed out later


async def test_a_cursor_older_than_retention_is_410_with_the_oldest_valid_cursor(
    gateway: Gateway, clock: ShiftedClock
) -> None:
    await gateway.ehr("PUT", "/Appointment/r1", json=appointment(id="r1"))
    await gateway.drain()
    first = (await gateway.platform("/changes")).json()
    await gateway.ehr("PUT", "/Appointment/r2", json=appointment(id="r2"))
    await gateway.ehr("PUT", "/Appointment/r3", json=appointment(id="r3"))
    await gateway.drain()
    feed = gateway.app.state.worker.feed
    clock.advance(1)
    await feed.trim("clinic-a", retention_seconds=0.0)  # everything so far is past retention
    stale = await gateway.platform(f"/changes?cursor={first['events'][0]['cursor']}")
    assert stale.status_code == 410
    oldest = stale.headers["gateway-oldest-cursor"]
    assert oldest in stale.json()["issue"][0]["diagnostics"]
    resumed = await gateway.platform(f"/changes?cursor={oldest}")
    assert resumed.status_code == 200 and resumed.json()["events"] == []
    await gateway.ehr("PUT", "/Appointment/r4", json=appointment(id="r4"))
    await gateway.drain()
    assert [e["record_id"] for e in (await gateway.platform(f"/changes?cursor={oldest}")).json()["events"]] == ["r4"]


async def test_records_trading_statuses_in_one_batch_are_listed_under_their_new_status(gateway: Gateway) -> None:
    for rid, status in (("m1", "booked"), ("m2", "cancelled")):
        await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, status=status))
    await gateway.drain()
    for rid, status in (("m1", "cancelled"), ("m2", "booked"), ("m3", "booked")):
        await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, status=status))
    await gateway.drain()
    scheduled = (await gateway.platform("/appointments?status=scheduled")).json()
    cancelled = (await gateway.platform("/appointments?status=cancelled")).json()
    assert sorted(r["id"] for r in scheduled["records"]) == ["m2", "m3"]
    assert [r["id"] for r in cancelled["records"]] == ["m1"]
