"""Reads and searchset pages send a stored version's bytes as they are, and answer exactly what they did before.

The expected answer is always the one the gateway gave when it parsed the stored version and wrote it again
(``encoding.dumps(encoding.loads(stored))``), with the same headers; a version written by an older gateway (spaces
after the separators) is still answered in the compact form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import encoding
from gateway.store import compact
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "status": "final",
    "code": {"text": 'Mood — été ✓ \u2028 "quoted" \\ back'},  # non-ASCII, a separator, escapes
    "subject": {"reference": "Patient/pat-9"},
    "valueQuantity": {"value": 1.0e-7, "unit": "x"},
}


async def _stored(gateway: Gateway, rtype: str, rid: str, vid: int = 1) -> bytes:
    services = gateway.services
    raw: bytes = await services.redis.hget(services.keys.history("clinic-a", rtype, rid), str(vid))
    return raw


async def _store_as_an_older_gateway_did(gateway: Gateway, rtype: str, rid: str, vid: int = 1) -> bytes:
    """Rewrite a stored version as the gateway wrote versions before the compact form (``json.dumps``)."""
    services = gateway.services
    older = json.dumps(encoding.loads(await _stored(gateway, rtype, rid, vid))).encode()
    await services.redis.hset(services.keys.history("clinic-a", rtype, rid), str(vid), older)
    return older


async def test_a_read_and_a_vread_answer_the_stored_bytes_with_their_headers(gateway: Gateway) -> None:
    assert (await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)).status_code == 201
    stored = await _stored(gateway, "Observation", "obs-1")
    meta = encoding.loads(stored)["meta"]
    for path in ("/Observation/obs-1", "/Observation/obs-1/_history/1"):
        answer = await gateway.ehr("GET", path)
        assert answer.status_code == 200
        assert answer.content == stored == encoding.dumps(encoding.loads(stored))
        assert answer.headers["etag"] == f'W/"{meta["versionId"]}"' == 'W/"1"'
        assert answer.headers["last-modified"].endswith(" GMT")
        assert answer.headers["content-type"] == "application/fhir+json; charset=utf-8"
        assert answer.headers["content-length"] == str(len(stored))
    # The media type a client asks for is still the one it is told it got.
    plain = await gateway.ehr("GET", "/Observation/obs-1", headers={"Accept": "application/json"})
    assert plain.headers["content-type"] == "application/json; charset=utf-8" and plain.content == stored


async def test_the_current_version_is_the_one_read_and_deletions_are_still_gone(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Observation/obs-1", json={**OBSERVATION, "status": "amended"})
    answer = await gateway.ehr("GET", "/Observation/obs-1")
    assert answer.content == await _stored(gateway, "Observation", "obs-1", 2)
    assert answer.headers["etag"] == 'W/"2"' and answer.json()["status"] == "amended"
    assert (await gateway.ehr("GET", "/Observation/obs-1/_history/1")).json()["status"] == "final"
    assert (await gateway.ehr("GET", "/Observation/obs-1/_history/9")).status_code == 404
    assert (await gateway.ehr("GET", "/Observation/nobody")).status_code == 404
    assert (await gateway.ehr("DELETE", "/Observation/obs-1")).status_code == 204
    assert (await gateway.ehr("GET", "/Observation/obs-1")).status_code == 410
    assert (await gateway.ehr("GET", "/Observation/obs-1/_history/3")).status_code == 410
    assert (await gateway.ehr("GET", "/Observation/obs-1/_history/2")).content == await _stored(
        gateway, "Observation", "obs-1", 2
    )


async def test_a_version_an_older_gateway_stored_is_answered_in_the_compact_form(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    compact_form = await _stored(gateway, "Observation", "obs-1")
    older = await _store_as_an_older_gateway_did(gateway, "Observation", "obs-1")
    assert older != compact_form and not compact.is_compact(older)
    for path in ("/Observation/obs-1", "/Observation/obs-1/_history/1"):
        answer = await gateway.ehr("GET", path)
        assert answer.content == compact_form
        assert answer.headers["etag"] == 'W/"1"' and answer.headers["last-modified"].endswith(" GMT")


def test_only_the_compact_form_is_sent_as_it_is() -> None:
    stored = encoding.dumps(
        {"resourceType": "Patient", "id": "p-1", "meta": {"versionId": "3", "lastUpdated": "2026-12-03T01:02:03Z"}}
    )
    head = compact.head(stored)
    assert head is not None
    assert (head.rtype, head.rid, head.version_id, head.last_updated) == ("Patient", "p-1", "3", "2026-12-03T01:02:03Z")
    assert compact.head(json.dumps(encoding.loads(stored)).encode()) is None  # spaces: an older gateway's
    assert compact.head(stored.replace(b'"p-1"', b'"p\\u002d1"')) is None  # an escape: parsed, never guessed at
    assert compact.head(b'{"resourceType":"Patient","id":"p-1","meta":{"lastUpdated":"x","versionId":"3"}}') is None


@pytest.mark.parametrize("older", [False, True])
async def test_reads_are_still_audited_with_the_patient_they_are_about(gateway: Gateway, older: bool) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Patient/pat-2", json={"resourceType": "Patient", "id": "pat-2"})
    await gateway.ehr("PUT", "/Appointment/appt-1", json=appointment(id="appt-1"))
    if older:
        for rtype, rid in (("Observation", "obs-1"), ("Patient", "pat-2"), ("Appointment", "appt-1")):
            await _store_as_an_older_gateway_did(gateway, rtype, rid)
    for path in ("/Observation/obs-1", "/Patient/pat-2/_history/1", "/Appointment/appt-1"):
        assert (await gateway.ehr("GET", path)).status_code == 200
    await gateway.services.audit.flush()
    entries = (await gateway.services.audit.entries("clinic-a", limit=1000)).entries
    reads = {e["id"]: e.get("patient") for e in entries if e["interaction"] in ("read", "vread")}
    assert reads == {"obs-1": "Patient/pat-9", "pat-2": "Patient/pat-2", "appt-1": None}


async def test_a_searchset_splices_each_stored_version_in_as_it_is(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Observation/obs-2", json={**OBSERVATION, "id": "obs-2", "status": "amended"})
    await gateway.ehr("PUT", "/Patient/pat-9", json={"resourceType": "Patient", "id": "pat-9", "gender": "other"})
    answer = await gateway.ehr("GET", "/Observation?_include=Observation:subject&_sort=_id")
    assert answer.status_code == 200
    bundle = answer.json()
    assert [(e["fullUrl"].rsplit("/R4/", 1)[1], e["search"]["mode"]) for e in bundle["entry"]] == [
        ("Observation/obs-1", "match"), ("Observation/obs-2", "match"), ("Patient/pat-9", "include")
    ]  # fmt: skip
    # The page is what parsing every version and writing the Bundle again gave, and holds each stored version.
    assert answer.content == encoding.dumps(bundle)
    for rtype, rid in (("Observation", "obs-1"), ("Observation", "obs-2"), ("Patient", "pat-9")):
        assert b'"resource":' + await _stored(gateway, rtype, rid) + b',"search"' in answer.content


async def test_elements_and_older_versions_in_a_searchset_are_written_as_before(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Observation/obs-2", json={**OBSERVATION, "id": "obs-2", "status": "amended"})
    subsetted = (await gateway.ehr("GET", "/Observation?_elements=status&_sort=_id")).json()
    assert [sorted(e["resource"]) for e in subsetted["entry"]] == [["id", "meta", "resourceType", "status"]] * 2
    assert all(t["code"] == "SUBSETTED" for e in subsetted["entry"] for t in e["resource"]["meta"]["tag"])
    before = await gateway.ehr("GET", "/Observation?_sort=_id")
    await _store_as_an_older_gateway_did(gateway, "Observation", "obs-2")
    after = await gateway.ehr("GET", "/Observation?_sort=_id")
    assert after.content == before.content
    assert b'"resource":' + await _stored(gateway, "Observation", "obs-1") in after.content


async def test_a_current_state_naming_a_missing_version_is_a_404_as_before(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    services = gateway.services
    await services.redis.hdel(services.keys.history("clinic-a", "Observation", "obs-1"), "1")
    answer = await gateway.ehr("GET", "/Observation/obs-1")
    assert answer.status_code == 404 and "no such version" in answer.text


async def test_history_bundles_splice_each_stored_version_in_as_it_is(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Observation/obs-1", json={**OBSERVATION, "status": "amended"})
    await gateway.ehr("DELETE", "/Observation/obs-1")
    for path in ("/Observation/obs-1/_history", "/Observation/_history", "/_history"):
        answer = await gateway.ehr("GET", path)
        assert answer.status_code == 200
        bundle = answer.json()
        assert [e["request"]["method"] for e in bundle["entry"]] == ["DELETE", "PUT", "POST"]
        assert "resource" not in bundle["entry"][0]
        # The page is what parsing every version and writing the Bundle again gave, and holds each stored version.
        assert answer.content == encoding.dumps(bundle)
        for vid in (1, 2):
            assert (
                b'"resource":' + await _stored(gateway, "Observation", "obs-1", vid) + b',"request"' in answer.content
            )
    before = await gateway.ehr("GET", "/Observation/obs-1/_history")
    await _store_as_an_older_gateway_did(gateway, "Observation", "obs-1", 1)
    after = await gateway.ehr("GET", "/Observation/obs-1/_history")
    assert after.content == before.content


@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_read_entries_of_a_bundle_splice_each_stored_version_in_as_it_is(gateway: Gateway, kind: str) -> None:
    await gateway.ehr("PUT", "/Observation/obs-1", json=OBSERVATION)
    await gateway.ehr("PUT", "/Observation/obs-1", json={**OBSERVATION, "status": "amended"})
    await gateway.ehr("PUT", "/Patient/pat-9", json={"resourceType": "Patient", "id": "pat-9"})
    reads = {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": "GET", "url": "Observation/obs-1"}},
        {"request": {"method": "GET", "url": "Patient/pat-9"}},
    ]}  # fmt: skip
    answer = await gateway.ehr("POST", "", json=reads)
    assert answer.status_code == 200
    bundle = answer.json()
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"2"', 'W/"1"']
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    # What parsing every version and writing the Bundle again gave, holding each stored version as it is.
    assert answer.content == encoding.dumps(bundle)
    for rtype, rid, vid in (("Observation", "obs-1", 2), ("Patient", "pat-9", 1)):
        assert b'"resource":' + await _stored(gateway, rtype, rid, vid) + b',"response"' in answer.content
    # A version an older gateway stored is answered as before.
    await _store_as_an_older_gateway_did(gateway, "Observation", "obs-1", 2)
    assert (await gateway.ehr("POST", "", json=reads)).content == answer.content
