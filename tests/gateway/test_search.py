"""FHIR search: _id, identifier, patient, _lastUpdated, _count and next links."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import Gateway
from tests.gateway.fixtures import appointment


async def _seed(gateway: Gateway, count: int) -> None:
    for i in range(count):
        body = appointment(
            id=f"s{i}",
            identifier=[{"system": "urn:ehr", "value": f"v{i}"}],
            participant=[{"actor": {"reference": f"Patient/p{i % 2}"}, "status": "accepted"}],
        )
        assert (await gateway.ehr("PUT", f"/Appointment/s{i}", json=body)).status_code == 201


async def test_search_by_id_identifier_and_patient(gateway: Gateway) -> None:
    await _seed(gateway, 4)
    by_id = (await gateway.ehr("GET", "/Appointment?_id=s1,s3")).json()
    assert by_id["type"] == "searchset"
    assert sorted(e["resource"]["id"] for e in by_id["entry"]) == ["s1", "s3"]
    by_identifier = (await gateway.ehr("GET", "/Appointment?identifier=urn:ehr|v2")).json()
    assert [e["resource"]["id"] for e in by_identifier["entry"]] == ["s2"]
    by_value_only = (await gateway.ehr("GET", "/Appointment?identifier=v2")).json()
    assert [e["resource"]["id"] for e in by_value_only["entry"]] == ["s2"]
    by_patient = (await gateway.ehr("GET", "/Appointment?patient=p1")).json()
    assert sorted(e["resource"]["id"] for e in by_patient["entry"]) == ["s1", "s3"]
    both = (await gateway.ehr("GET", "/Appointment?patient=Patient/p1&_id=s3,s2")).json()
    assert [e["resource"]["id"] for e in both["entry"]] == ["s3"]


async def test_updates_move_index_entries(gateway: Gateway) -> None:
    await _seed(gateway, 1)
    moved = appointment(id="s0", identifier=[{"system": "urn:ehr", "value": "new"}],
                        participant=[{"actor": {"reference": "Patient/p9"}, "status": "accepted"}])  # fmt: skip
    await gateway.ehr("PUT", "/Appointment/s0", json=moved)
    assert (await gateway.ehr("GET", "/Appointment?identifier=urn:ehr|v0")).json()["total"] == 0
    assert (await gateway.ehr("GET", "/Appointment?patient=p0")).json()["total"] == 0
    assert (await gateway.ehr("GET", "/Appointment?patient=p9")).json()["total"] == 1
    await gateway.ehr("DELETE", "/Appointment/s0")
    assert (await gateway.ehr("GET", "/Appointment?identifier=new")).json()["total"] == 0
    assert (await gateway.ehr("GET", "/Appointment")).json()["total"] == 0


async def test_last_updated_ranges(gateway: Gateway) -> None:
    await _seed(gateway, 2)
    assert (await gateway.ehr("GET", "/Appointment?_lastUpdated=gt2000-01-01")).json()["total"] == 2
    assert (await gateway.ehr("GET", "/Appointment?_lastUpdated=lt2000-01-01")).json()["total"] == 0
    stamp = (await gateway.ehr("GET", "/Appointment/s1")).json()["meta"]["lastUpdated"]
    assert (await gateway.ehr("GET", f"/Appointment?_lastUpdated=ge{stamp}")).json()["total"] >= 1
    assert (await gateway.ehr("GET", f"/Appointment?_lastUpdated=gt{stamp}")).json()["total"] == 0


async def test_paging_follows_next_links_without_gaps_or_repeats(gateway: Gateway) -> None:
    await _seed(gateway, 7)
    seen: list[str] = []
    url = "/Appointment?_count=3"
    pages = 0
    while url:
        page = (await gateway.ehr("GET", url)).json()
        assert page["total"] == 7
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = ""
        if nxt:
            parts = urlsplit(nxt[0])
            url = parts.path.removeprefix("/fhir/R4") + "?" + parts.query
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(f"s{i}" for i in range(7))


async def test_unknown_parameters_are_reported_not_silently_applied(gateway: Gateway) -> None:
    await _seed(gateway, 1)
    page = (await gateway.ehr("GET", "/Appointment?status=booked")).json()
    outcomes = [e for e in page["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and "status" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
