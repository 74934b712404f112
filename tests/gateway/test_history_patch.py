"""History (instance, type, system) as history Bundles with paging, and PATCH validated like an update."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_B, Gateway, running
from tests.gateway.fixtures import appointment, next_path
from tests.support import ShiftedClock

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


async def _history(gateway: Gateway, url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while url:
        response = await gateway.ehr("GET", url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        entries += bundle.get("entry", [])
        url = next_path(bundle)
    return entries


async def test_instance_history_lists_every_version_newest_first(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/h1", json=appointment(id="h1"))
    await gateway.ehr("PUT", "/Appointment/h1", json=appointment(id="h1", description="moved"))
    await gateway.ehr("DELETE", "/Appointment/h1")
    await gateway.ehr("PUT", "/Appointment/h1", json=appointment(id="h1", description="back"))
    entries = await _history(gateway, "/Appointment/h1/_history?_count=2")
    assert [e["response"]["etag"] for e in entries] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in entries] == ["PUT", "DELETE", "PUT", "POST"]
    assert "resource" not in entries[1]
    assert entries[0]["resource"]["description"] == "back"
    assert all(e["response"]["lastModified"].endswith("Z") for e in entries)
    assert (await gateway.ehr("GET", "/Appointment/never/_history")).status_code == 404


async def test_type_and_system_history_page_without_gaps(gateway: Gateway) -> None:
    for i in range(5):
        await gateway.ehr("PUT", f"/Appointment/t{i}", json=appointment(id=f"t{i}"))
    # History is newest first by lastUpdated, which has milliseconds: versions written in one millisecond (a fast
    # machine writes two) are in no defined order among themselves, so each of the next two is a millisecond on.
    await asyncio.sleep(0.002)
    await gateway.ehr("PUT", "/Appointment/t0", json=appointment(id="t0", description="again"))
    await asyncio.sleep(0.002)
    await gateway.ehr("PUT", "/Patient/tp", json={"resourceType": "Patient", "id": "tp"})
    typed = await _history(gateway, "/Appointment/_history?_count=2")
    assert len(typed) == 6
    assert {e["resource"]["id"] for e in typed} == {f"t{i}" for i in range(5)}
    assert typed[0]["resource"]["description"] == "again"  # newest first
    everything = await _history(gateway, "/_history?_count=3")
    assert len(everything) == 7
    assert everything[0]["fullUrl"].endswith("/Patient/tp")
    first = (await gateway.ehr("GET", "/Appointment/_history?_count=2")).json()
    assert first["total"] == 6
    # A version written while a client pages is not handed to it in the middle of its pages.
    await gateway.ehr("PUT", "/Appointment/t9", json=appointment(id="t9"))
    rest = await _history(gateway, next_path(first))
    assert len(rest) == 4 and "t9" not in {e["resource"]["id"] for e in rest}
    since = typed[0]["response"]["lastModified"]
    recent = (await gateway.ehr("GET", f"/Appointment/_history?_since={since}")).json()
    assert {e["resource"]["id"] for e in recent["entry"]} >= {"t0", "t9"}
    assert (await gateway.ehr("GET", "/Appointment/_history", token=EHR_B)).json()["total"] == 0


async def test_versions_written_in_one_millisecond_keep_their_order(settings: Settings, clients: ClientsConfig) -> None:
    """An EHR that sends eleven versions of one Appointment faster than the clock ticks (a stopped clock here) gets
    them back in order: each version is stamped after the one before, and type and system history list version 11
    first and 1 last, not 9 before 10 as the text of their ids would sort them."""
    now = time.time()
    async with running(settings, clients, with_worker=False, clock=lambda: now) as gateway:
        for n in range(1, 12):
            response = await gateway.ehr("PUT", "/Appointment/m1", json=appointment(id="m1", description=f"v{n}"))
            assert response.status_code in (200, 201), response.text
        for url in ("/Appointment/_history?_count=4", "/_history?_count=4", "/Appointment/m1/_history?_count=4"):
            entries = await _history(gateway, url)
            assert [e["resource"]["description"] for e in entries] == [f"v{n}" for n in range(11, 0, -1)], url
            stamps = [e["resource"]["meta"]["lastUpdated"] for e in entries]
            assert stamps == sorted(set(stamps), reverse=True), url  # each one a millisecond after the one before
            assert [e["response"]["lastModified"] for e in entries] == stamps, url
        since = stamps[1]  # version 10's: _since reads the same stamps
        recent = (await gateway.ehr("GET", f"/Appointment/_history?_since={since}")).json()
        assert [e["resource"]["description"] for e in recent["entry"]] == ["v11", "v10"]


async def test_a_version_is_stamped_after_one_from_a_clock_ahead(
    settings: Settings, clients: ClientsConfig, clock: ShiftedClock
) -> None:
    """Two API processes whose clocks differ: an update from the one behind is still stamped after the version it
    replaces, so history keeps the versions in the order they were written."""
    async with running(settings, clients, with_worker=False, clock=clock) as gateway:
        clock.advance(5.0)  # the first version comes from a process 5 s ahead
        first = (await gateway.ehr("PUT", "/Appointment/k1", json=appointment(id="k1"))).json()
        clock.advance(-5.0)
        second = (await gateway.ehr("PUT", "/Appointment/k1", json=appointment(id="k1", description="later"))).json()
        assert second["meta"]["lastUpdated"] > first["meta"]["lastUpdated"]
        entries = await _history(gateway, "/Appointment/_history")
        assert [e["resource"]["meta"]["versionId"] for e in entries] == ["2", "1"]


async def test_json_patch_with_if_match(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/p1", json=appointment(id="p1"))
    await gateway.drain()  # two versions handled together can lose an event (issue #12, item 8): not this test's
    ops = [{"op": "replace", "path": "/status", "value": "cancelled"}, {"op": "add", "path": "/comment", "value": "x"}]
    done = await gateway.ehr("PATCH", "/Appointment/p1", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["comment"], done.headers["etag"]) == ("cancelled", "x", 'W/"2"')
    stale = await gateway.ehr("PATCH", "/Appointment/p1", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    await gateway.drain()
    events = (await gateway.platform("/changes?types=appointment.*")).json()["events"]
    assert [e["type"] for e in events] == ["appointment.created", "appointment.cancelled"]


async def test_a_bad_patch_is_refused_with_the_right_status(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/p2", json=appointment(id="p2"))
    cases = [
        ({"op": "replace", "path": "/status"}, 400),  # not an array
        ([{"op": "frobnicate", "path": "/status"}], 400),
        ([{"op": "test", "path": "/status", "value": "cancelled"}], 422),
        ([{"op": "remove", "path": "/nothing/here"}], 422),
        ([{"op": "replace", "path": "/status", "value": "not-a-status"}], 422),  # the result is not valid FHIR
        ([{"op": "replace", "path": "/id", "value": "other"}], 422),
    ]
    for ops, status in cases:
        response = await gateway.ehr("PATCH", "/Appointment/p2", json=ops, headers=JSON_PATCH)
        assert response.status_code == status, (ops, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert (await gateway.ehr("GET", "/Appointment/p2")).json()["meta"]["versionId"] == "1"
    xml = await gateway.ehr("PATCH", "/Appointment/p2", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    missing = await gateway.ehr("PATCH", "/Appointment/none", json=[], headers=JSON_PATCH)
    assert missing.status_code == 404


async def test_concurrent_patches_are_all_applied(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Patient/pp", json={"resourceType": "Patient", "id": "pp", "name": [{"family": "P"}]})
    ops = [[{"op": "add", "path": "/name/-", "value": {"family": f"F{i}"}}] for i in range(4)]
    answers = await asyncio.gather(*(gateway.ehr("PATCH", "/Patient/pp", json=o, headers=JSON_PATCH) for o in ops))
    assert [a.status_code for a in answers] == [200] * 4
    stored = (await gateway.ehr("GET", "/Patient/pp")).json()
    assert sorted(n["family"] for n in stored["name"]) == ["F0", "F1", "F2", "F3", "P"]
    assert stored["meta"]["versionId"] == "5"


async def test_merge_patch_as_fhirpy_sends_it(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Patient/mp", json={"resourceType": "Patient", "id": "mp", "gender": "male"})
    response = await gateway.ehr("PATCH", "/Patient/mp", json={"gender": "female", "birthDate": "1990-01-01"},
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert (response.json()["gender"], response.json()["birthDate"]) == ("female", "1990-01-01")
