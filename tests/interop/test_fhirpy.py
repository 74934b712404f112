"""fhirpy (sync and async clients, unmodified) against a real ``fhir-gateway run`` over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound

from tests.interop.conftest import Server
from tests.interop.scenario import SYSTEM, searches, seeds

pytestmark = pytest.mark.e2e


def _client(server: Server, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(server.base, authorization=f"Bearer {server.token}", extra_headers=headers or None)


def _seed(client: SyncFHIRClient, tag: str) -> None:
    for body in seeds(tag):
        client.resource(body["resourceType"], **body).save()


def test_crud_and_version_aware_update(server: Server, tag: str) -> None:
    client = _client(server)
    patient = client.resource("Patient", name=[{"family": f"Crud{tag}"}], gender="other")
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    read = client.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == f"Crud{tag}"
    read["gender"] = "female"
    _client(server, **{"If-Match": 'W/"1"'}).resource("Patient", **read).save()
    assert client.reference("Patient", patient.id).to_resource()["meta"]["versionId"] == "2"
    with pytest.raises(MultipleResourcesFound):  # fhirpy's name for 412: the version is stale
        _client(server, **{"If-Match": 'W/"1"'}).resource("Patient", **{**read, "gender": "male"}).save()
    patient.delete()
    with pytest.raises(ResourceNotFound):
        client.reference("Patient", patient.id).to_resource()


def test_a_read_modify_write_is_never_silently_dropped(server: Server, tag: str) -> None:
    client = _client(server)
    created = client.resource("Patient", name=[{"family": f"Lost{tag}"}])
    created.save()
    copy_a = client.reference("Patient", created.id).to_resource()
    copy_b = client.reference("Patient", created.id).to_resource()
    for gender in ("female", "other"):
        copy_b["gender"] = gender
        copy_b.save()
    copy_a["birthDate"] = "1990-04-02"
    copy_a.save()
    stored = client.reference("Patient", created.id).to_resource()
    assert stored["birthDate"] == "1990-04-02"
    assert stored["meta"]["versionId"] == "4"


def test_every_search_parameter_narrows(server: Server, tag: str) -> None:
    client = _client(server)
    _seed(client, tag)
    for rtype, params, expected, ordered in searches(tag):
        found = [r.id for r in client.resources(rtype).search(**params).fetch_all()]
        assert (found if ordered else sorted(found)) == (expected if ordered else sorted(expected)), (rtype, params)


def test_paging_count_elements_and_includes(server: Server, tag: str) -> None:
    client = _client(server)
    _seed(client, tag)
    appointments = client.resources("Appointment").search(_id=f"ap1-{tag},ap2-{tag},ap3-{tag}")
    assert sorted(r.id for r in appointments.limit(1).fetch_all()) == [f"ap1-{tag}", f"ap2-{tag}", f"ap3-{tag}"]
    assert appointments.count() == 3
    counted = appointments.search(_summary="count").fetch_raw()
    assert counted["total"] == 3 and "entry" not in counted
    assert "total" not in appointments.search(_total="none").fetch_raw()
    [slim] = client.resources("Appointment").search(_id=f"ap1-{tag}").elements("status").fetch()
    assert set(slim) == {"resourceType", "id", "meta", "status"}
    bundle = client.resources("Appointment").search(_id=f"ap1-{tag}").include("Appointment", "patient").fetch_raw()
    assert {(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]} == {
        ("match", f"ap1-{tag}"),
        ("include", f"pa-{tag}"),
    }
    rev = client.resources("Patient").search(_id=f"pa-{tag}").revinclude("Appointment", "patient").fetch_raw()
    assert sorted(e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include") == [
        f"ap1-{tag}", f"ap3-{tag}"
    ]  # fmt: skip
    response = httpx.post(f"{server.base}/Appointment/_search", data={"patient": f"pa-{tag}", "_sort": "-date"},
                          headers=server.headers)  # fmt: skip
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [f"ap3-{tag}", f"ap1-{tag}"]


def test_unsupported_parameters_never_widen(server: Server, tag: str) -> None:
    client = _client(server)
    _seed(client, tag)
    found = client.resources("Appointment").search(patient=f"pa-{tag}", **{"service-type": "x"}).fetch_all()
    assert sorted(r.id for r in found) == [f"ap1-{tag}", f"ap3-{tag}"]
    with pytest.raises(OperationOutcome):
        client.resources("Encounter").search(**{"subject.name": f"Rivera{tag}"}).fetch()
    with pytest.raises(OperationOutcome):
        client.resources("Practitioner").search(patient=f"pa-{tag}").fetch()
    strict = _client(server, Prefer="handling=strict")
    with pytest.raises(OperationOutcome):
        strict.resources("Appointment").search(**{"service-type": "x"}).fetch()


def test_conditional_create_update_and_delete(server: Server, tag: str) -> None:
    client = _client(server)
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"C-{tag}"}]}
    client.resource("Patient", **body).save()
    by_identifier = client.resources("Patient").search(identifier=f"{SYSTEM}|C-{tag}")
    with pytest.raises(OperationOutcome):  # fhirpy's get_or_create puts the search in the POST's URL: refused
        by_identifier.get_or_create(client.resource("Patient", **body))
    assert by_identifier.count() == 1
    updated, created = by_identifier.update(client.resource("Patient", **body, gender="other"))
    assert (updated["gender"], created) == ("other", False)
    _, made = (
        client.resources("Patient")
        .search(identifier=f"{SYSTEM}|D-{tag}")
        .update(client.resource("Patient", identifier=[{"system": SYSTEM, "value": f"D-{tag}"}]))
    )
    assert made is True
    by_identifier.delete()
    assert by_identifier.count() == 0


def test_transaction_batch_conditional_references_history_and_patch(server: Server, tag: str) -> None:
    client = _client(server)
    client.resource("Patient", id=f"tx-{tag}", identifier=[{"system": SYSTEM, "value": f"T-{tag}"}]).save()
    transaction: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "mood"},
                      "subject": {"reference": f"Patient?identifier={SYSTEM}|T-{tag}"}},
         "request": {"method": "POST", "url": "Observation"}}]}  # fmt: skip
    answer = client.execute("", method="post", data=transaction)
    obs_id = answer["entry"][0]["response"]["location"].split("/")[1]
    assert client.reference("Observation", obs_id).to_resource()["subject"]["reference"] == f"Patient/tx-{tag}"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/tx-{tag}"}},
        {"request": {"method": "GET", "url": "Patient/never-was"}}]}  # fmt: skip
    statuses = [e["response"]["status"][:3] for e in client.execute("", method="post", data=batch)["entry"]]
    assert statuses == ["200", "404"]
    patient = client.reference("Patient", f"tx-{tag}").to_resource()
    patient.patch(gender="female")  # fhirpy sends the changed fields: a merge patch
    assert client.reference("Patient", f"tx-{tag}").to_resource()["gender"] == "female"
    history = client.execute(f"Patient/tx-{tag}/_history", method="get")
    assert history["type"] == "history"
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    typed = client.execute("Observation/_history", method="get", params={"_count": "1"})
    assert typed["type"] == "history" and any(link["relation"] == "next" for link in typed["link"])


async def test_the_async_client_does_the_same(server: Server, tag: str) -> None:
    client = AsyncFHIRClient(server.base, authorization=f"Bearer {server.token}")
    for body in seeds(tag):
        await client.resource(body["resourceType"], **body).save()
    for rtype, params, expected, ordered in searches(tag):
        found = [r.id for r in await client.resources(rtype).search(**params).fetch_all()]
        assert (found if ordered else sorted(found)) == (expected if ordered else sorted(expected)), (rtype, params)
    page = [r.id async for r in client.resources("Appointment").search(patient=f"pa-{tag}").limit(1)]
    assert sorted(page) == [f"ap1-{tag}", f"ap3-{tag}"]
    copy_a = await client.reference("Patient", f"pb-{tag}").to_resource()
    copy_b = await client.reference("Patient", f"pb-{tag}").to_resource()
    copy_b["gender"] = "other"
    await copy_b.save()
    copy_a["birthDate"] = "1985-11-21"
    await copy_a.save()
    stored = await client.reference("Patient", f"pb-{tag}").to_resource()
    assert stored["birthDate"] == "1985-11-21"  # applied, not dropped (its gender is A's copy: last write wins)
    await copy_a.patch(active=True)
    assert (await client.reference("Patient", f"pb-{tag}").to_resource())["active"] is True
    _, created = (
        await client.resources("Patient")
        .search(identifier=f"{SYSTEM}|E-{tag}")
        .update(client.resource("Patient", identifier=[{"system": SYSTEM, "value": f"E-{tag}"}]))
    )
    assert created is True
    await client.resources("Patient").search(identifier=f"{SYSTEM}|E-{tag}").delete()
    assert await client.resources("Patient").search(identifier=f"{SYSTEM}|E-{tag}").count() == 0
