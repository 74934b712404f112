"""The FHIR edge's single-resource interactions, as an EHR integration sees them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_B, PLATFORM_A, Gateway, running
from tests.gateway.fixtures import appointment


async def test_create_answers_201_with_location_etag_and_stored_meta(gateway: Gateway) -> None:
    response = await gateway.ehr("POST", "/Appointment", json=appointment())
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/fhir/R4/Appointment/{body['id']}/_history/1")
    assert response.headers["content-type"].startswith("application/fhir+json")

    read = await gateway.ehr("GET", f"/Appointment/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["etag"] == 'W/"1"'


async def test_put_creates_then_updates_and_keeps_every_version(gateway: Gateway) -> None:
    first = await gateway.ehr("PUT", "/Appointment/a1", json=appointment(id="a1"))
    assert first.status_code == 201
    second = await gateway.ehr("PUT", "/Appointment/a1", json=appointment(id="a1", description="Moved room"))
    assert second.status_code == 200
    assert second.json()["meta"]["versionId"] == "2"
    v1 = await gateway.ehr("GET", "/Appointment/a1/_history/1")
    assert v1.json()["description"] == "Follow-up visit"
    assert (await gateway.ehr("GET", "/Appointment/a1/_history/2")).json()["description"] == "Moved room"
    assert (await gateway.ehr("GET", "/Appointment/a1/_history/3")).status_code == 404


async def test_identical_update_makes_no_new_version_and_no_event(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/same", json=appointment(id="same"))
    again = await gateway.ehr("PUT", "/Appointment/same", json=appointment(id="same"))
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"
    await gateway.drain()
    events = (await gateway.platform("/changes")).json()["events"]
    assert [e["type"] for e in events] == ["appointment.created"]


async def test_ehr_meta_is_kept_beside_the_gateway_version(gateway: Gateway) -> None:
    sent = appointment(id="m1", meta={"versionId": "17", "lastUpdated": "2026-11-01T10:00:00Z"})
    stored = (await gateway.ehr("PUT", "/Appointment/m1", json=sent)).json()
    assert stored["meta"]["versionId"] == "1"
    extensions = {e["url"]: e for e in stored["meta"]["extension"]}
    assert any(e.get("valueId") == "17" for e in extensions.values())
    assert any(e.get("valueInstant") == "2026-11-01T10:00:00Z" for e in extensions.values())


async def test_an_older_ehr_version_is_not_applied_only_when_the_sender_says_it_is_the_ehrs(gateway: Gateway) -> None:
    newer = appointment(id="o1", description="newer", meta={"lastUpdated": "2026-11-02T10:00:00Z"})
    older = appointment(id="o1", description="older", meta={"lastUpdated": "2026-11-01T10:00:00Z"})
    ehr = {"X-Ehr-Source": "true"}
    await gateway.ehr("PUT", "/Appointment/o1", json=newer, headers=ehr)
    late = await gateway.ehr("PUT", "/Appointment/o1", json=older, headers=ehr)
    assert late.status_code == 200
    outcome = late.json()
    assert outcome["resourceType"] == "OperationOutcome"  # says it was not applied, rather than answer as if it was
    assert outcome["issue"][0]["code"] == "conflict"
    assert "not applied" in outcome["issue"][0]["diagnostics"]
    assert late.headers["etag"] == 'W/"1"'
    assert (await gateway.ehr("GET", "/Appointment/o1")).json()["description"] == "newer"
    # Without the header the body's meta orders nothing (R4: the server SHALL ignore it): the update applies.
    plain = await gateway.ehr("PUT", "/Appointment/o1", json=older)
    assert plain.status_code == 200
    assert plain.json()["description"] == "older"
    assert plain.json()["meta"]["versionId"] == "2"


async def test_a_read_modify_write_is_never_silently_dropped(gateway: Gateway) -> None:
    created = await gateway.ehr("POST", "/Patient", json={"resourceType": "Patient", "name": [{"family": "Lost"}]})
    pid = created.json()["id"]
    copy_a = (await gateway.ehr("GET", f"/Patient/{pid}")).json()
    copy_b = (await gateway.ehr("GET", f"/Patient/{pid}")).json()
    for gender in ("female", "other"):
        copy_b = (await gateway.ehr("PUT", f"/Patient/{pid}", json={**copy_b, "gender": gender})).json()
    answer = await gateway.ehr("PUT", f"/Patient/{pid}", json={**copy_a, "birthDate": "1990-04-02"})
    assert answer.status_code == 200
    assert answer.json()["birthDate"] == "1990-04-02"
    assert answer.json()["meta"]["versionId"] == "4"
    assert (await gateway.ehr("GET", f"/Patient/{pid}")).json()["birthDate"] == "1990-04-02"


async def test_a_copy_read_from_the_gateway_keeps_the_ehr_version_it_came_from(gateway: Gateway) -> None:
    pushed = appointment(id="rt1", meta={"versionId": "17", "lastUpdated": "2026-11-01T10:00:00Z"})
    served = (await gateway.ehr("PUT", "/Appointment/rt1", json=pushed)).json()
    again = (await gateway.ehr("PUT", "/Appointment/rt1", json={**served, "description": "edited"})).json()
    extensions = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in again["meta"]["extension"]}
    assert sorted(extensions.values()) == ["17", "2026-11-01T10:00:00Z"]  # not the gateway's "1" and its own time


async def test_if_match_with_a_stale_version_is_refused(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/lock", json=appointment(id="lock"))
    await gateway.ehr("PUT", "/Appointment/lock", json=appointment(id="lock", description="v2"))
    stale = await gateway.ehr(
        "PUT",
        "/Appointment/lock",
        json=appointment(id="lock", description="v3"),
        headers={"If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    fresh = await gateway.ehr(
        "PUT",
        "/Appointment/lock",
        json=appointment(id="lock", description="v3"),
        headers={"If-Match": 'W/"2"'},
    )
    assert fresh.status_code == 200
    assert fresh.json()["meta"]["versionId"] == "3"


async def test_delete_leaves_a_tombstone_and_publishes_deleted(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/gone", json=appointment(id="gone"))
    await gateway.drain()
    deleted = await gateway.ehr("DELETE", "/Appointment/gone")
    assert deleted.status_code == 204
    assert (await gateway.ehr("GET", "/Appointment/gone")).status_code == 410
    assert (await gateway.ehr("GET", "/Appointment/gone/_history/1")).status_code == 200
    assert (await gateway.ehr("DELETE", "/Appointment/gone")).status_code == 204
    await gateway.drain()
    events = (await gateway.platform("/changes")).json()["events"]
    assert [e["type"] for e in events] == ["appointment.created", "appointment.deleted"]
    assert events[-1]["record"]["deleted"] is True


async def test_unmapped_types_are_stored_without_events(gateway: Gateway) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "mood"},
        "subject": {"reference": "Patient/pat-1"},
    }
    created = await gateway.ehr("POST", "/Observation", json=observation)
    assert created.status_code == 201
    await gateway.drain()
    assert (await gateway.platform("/changes")).json()["events"] == []


async def test_conditional_create_is_atomic_under_concurrency(gateway: Gateway) -> None:
    body = appointment(identifier=[{"system": "urn:ehr", "value": "race-1"}])
    headers = {"If-None-Exist": "identifier=urn:ehr|race-1"}
    responses = await asyncio.gather(
        *(gateway.ehr("POST", "/Appointment", json=body, headers=headers) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    found = (await gateway.ehr("GET", "/Appointment?identifier=urn:ehr|race-1")).json()
    assert found["total"] == 1


async def test_conditional_create_with_several_matches_is_412(gateway: Gateway) -> None:
    for rid in ("dup-a", "dup-b"):
        await gateway.ehr(
            "PUT", f"/Appointment/{rid}", json=appointment(id=rid, identifier=[{"system": "s", "value": "v"}])
        )
    response = await gateway.ehr(
        "POST", "/Appointment", json=appointment(), headers={"If-None-Exist": "identifier=s|v"}
    )
    assert response.status_code == 412


async def test_a_retried_plain_post_does_not_duplicate(gateway: Gateway) -> None:
    first = await gateway.ehr("POST", "/Appointment", json=appointment())
    retry = await gateway.ehr("POST", "/Appointment", json=appointment())
    assert (first.status_code, retry.status_code) == (201, 200)
    assert first.json()["id"] == retry.json()["id"]


async def test_tenants_never_see_each_other(gateway: Gateway) -> None:
    created = (await gateway.ehr("PUT", "/Appointment/secret", json=appointment(id="secret"))).json()
    assert (await gateway.ehr("GET", f"/Appointment/{created['id']}", token=EHR_B)).status_code == 404
    assert (await gateway.ehr("GET", "/Appointment?_id=secret", token=EHR_B)).json()["total"] == 0
    await gateway.drain()
    assert (await gateway.platform("/appointments/secret", token=PLATFORM_A)).status_code == 200
    from tests.conftest import PLATFORM_B

    assert (await gateway.platform("/appointments/secret", token=PLATFORM_B)).status_code == 404
    assert (await gateway.platform("/changes", token=PLATFORM_B)).json()["events"] == []


async def test_metadata_lists_what_is_served(gateway: Gateway) -> None:
    statement = (await gateway.http.get("/fhir/R4/metadata")).json()
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    appointment_entry = next(r for r in rest["resource"] if r["type"] == "Appointment")
    codes = {i["code"] for i in appointment_entry["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "create", "search-type", "history-instance",
                     "history-type"}  # fmt: skip
    assert {p["name"] for p in appointment_entry["searchParam"]} == {
        "_id", "_lastUpdated", "identifier", "status", "date", "patient", "actor", "practitioner", "location",
        "based-on", "reason-reference", "slot", "supporting-info",
    }  # fmt: skip
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    assert len(rest["resource"]) >= 145


async def test_metadata_names_the_address_each_client_called(gateway: Gateway) -> None:
    """The statement is written once per address, and each client still gets the base and token URL it called."""

    def addresses(statement: dict[str, Any]) -> tuple[str, str]:
        [oauth] = statement["rest"][0]["security"]["extension"]
        token = next(e["valueUri"] for e in oauth["extension"] if e["url"] == "token")
        return statement["implementation"]["url"], token

    async def metadata(host: str) -> bytes:
        answer = await gateway.http.get("/fhir/R4/metadata", headers={"host": host})
        assert answer.status_code == 200
        return answer.content

    first = await metadata("gw-a.example.test")
    assert addresses(orjson.loads(first)) == (
        "http://gw-a.example.test/fhir/R4", "http://gw-a.example.test/oauth2/token"
    )  # fmt: skip
    other = orjson.loads(await metadata("gw-b.example.test:8443"))
    assert addresses(other) == ("http://gw-b.example.test:8443/fhir/R4", "http://gw-b.example.test:8443/oauth2/token")
    for n in range(40):  # more addresses than are kept: the first one's statement is written again, the same
        await metadata(f"gw-{n}.example.test")
    assert await metadata("gw-a.example.test") == first


async def test_conditional_update_and_delete_by_identifier(gateway: Gateway) -> None:
    body = appointment(identifier=[{"system": "urn:ehr", "value": "cu-1"}])
    created = await gateway.ehr("PUT", "/Appointment?identifier=urn:ehr|cu-1", json=body)
    assert created.status_code == 201
    rid = created.json()["id"]
    updated = await gateway.ehr("PUT", "/Appointment?identifier=urn:ehr|cu-1", json={**body, "description": "new"})
    assert updated.status_code == 200
    assert updated.json()["id"] == rid and updated.json()["meta"]["versionId"] == "2"
    deleted = await gateway.ehr("DELETE", "/Appointment?identifier=urn:ehr|cu-1")
    assert deleted.status_code == 204
    assert (await gateway.ehr("GET", f"/Appointment/{rid}")).status_code == 410
    unsupported = await gateway.ehr("DELETE", "/Appointment?status=booked")
    assert unsupported.status_code == 400


async def test_validate_warns_on_an_unknown_profile_and_uses_stored_questionnaires(gateway: Gateway) -> None:
    unknown = await gateway.ehr(
        "POST", "/Appointment/$validate?profile=http://example.org/StructureDefinition/nope", json=appointment()
    )
    assert unknown.status_code == 200
    assert any(i["severity"] == "warning" for i in unknown.json()["issue"])

    questionnaire = {
        "resourceType": "Questionnaire",
        "id": "q-int",
        "url": "http://example.org/Questionnaire/q-int",
        "status": "active",
        "item": [{"linkId": "age", "type": "integer", "text": "Age"}],
    }
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://example.org/Questionnaire/q-int",
        "status": "completed",
        "item": [{"linkId": "age", "answer": [{"valueString": "forty"}]}],
    }
    before = await gateway.ehr("POST", "/QuestionnaireResponse/$validate", json=response)
    assert before.status_code == 200  # the Questionnaire is not known yet: nothing to check the answer against
    await gateway.ehr("PUT", "/Questionnaire/q-int", json=questionnaire)
    after = await gateway.ehr("POST", "/QuestionnaireResponse/$validate", json=response)
    assert after.status_code == 400
    assert any("item[0].answer[0]" in p for i in after.json()["issue"] for p in i.get("expression", []))


async def test_the_pollers_accept_path_skips_an_older_ehr_version(gateway: Gateway) -> None:
    from gateway.fhir.bundle import accept

    edge = gateway.services.edge
    newer = appointment(id="poll1", description="newer", meta={"versionId": "3", "lastUpdated": "2026-11-02T10:00:00Z"})
    older = appointment(id="poll1", description="older", meta={"versionId": "2", "lastUpdated": "2026-11-01T10:00:00Z"})
    assert await accept(edge, "clinic-a", [newer], from_ehr=True) == [201]
    assert await accept(edge, "clinic-a", [older], from_ehr=True) == [200]
    stored = (await gateway.ehr("GET", "/Appointment/poll1")).json()
    assert (stored["description"], stored["meta"]["versionId"]) == ("newer", "1")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/Patient"), ("GET", "/Patient/x"), ("GET", "/metadata"), ("POST", ""), ("POST", "/Patient/$validate"),
     ("GET", "/Patient/x/_history"), ("DELETE", "/Patient/x")],
)  # fmt: skip
async def test_a_format_the_gateway_cannot_produce_is_406_on_every_route(
    gateway: Gateway, method: str, path: str
) -> None:
    by_format = await gateway.ehr(method, f"{path}?_format=xml", json={"resourceType": "Patient"})
    assert by_format.status_code == 406, by_format.text
    assert by_format.json()["issue"][0]["expression"] == ["_format"]
    by_accept = await gateway.ehr(method, path, json={"resourceType": "Patient"},
                                  headers={"Accept": "application/fhir+xml"})  # fmt: skip
    assert by_accept.status_code == 406
    assert by_accept.json()["resourceType"] == "OperationOutcome"


async def test_answers_are_fhir_json_in_utf8_or_plain_json_when_asked(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Patient/fmt", json={"resourceType": "Patient", "id": "fmt"})
    plain = await gateway.ehr("GET", "/Patient/fmt")
    assert plain.headers["content-type"] == "application/fhir+json; charset=utf-8"
    as_json = await gateway.ehr("GET", "/Patient/fmt", headers={"Accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json; charset=utf-8"
    assert (
        (await gateway.ehr("GET", "/Patient/fmt?_format=json"))
        .headers["content-type"]
        .startswith("application/fhir+json")
    )
    either = await gateway.ehr("GET", "/Patient?_id=fmt", headers={"Accept": "application/fhir+json, */*;q=0.1"})
    assert either.headers["content-type"] == "application/fhir+json; charset=utf-8"
    missing = await gateway.ehr("GET", "/Patient/nope", headers={"Accept": "application/json"})
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/json; charset=utf-8")
    xml_body = await gateway.ehr("POST", "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"})
    assert xml_body.status_code == 415  # a body the gateway cannot read stays 415


async def test_an_update_without_the_id_in_its_body_is_400(gateway: Gateway) -> None:
    response = await gateway.ehr("PUT", "/Patient/noid", json={"resourceType": "Patient", "gender": "other"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]
    assert (await gateway.ehr("GET", "/Patient/noid")).status_code == 404
    entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient/noid"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    refused = await gateway.ehr("POST", "", json=bundle)
    assert refused.status_code == 400
    assert "Bundle.entry[0].resource.id" in refused.json()["issue"][0]["expression"]


async def test_a_create_with_a_search_in_the_url_is_400_not_a_duplicate(gateway: Gateway) -> None:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "fhirpy-1"}]}
    assert (await gateway.ehr("POST", "/Patient", json=body)).status_code == 201
    again = await gateway.ehr("POST", "/Patient?identifier=urn:mrn|fhirpy-1", json={**body, "gender": "other"})
    assert again.status_code == 400
    assert "If-None-Exist" in again.json()["issue"][0]["diagnostics"]
    assert (await gateway.ehr("GET", "/Patient?identifier=urn:mrn|fhirpy-1")).json()["total"] == 1


@pytest.fixture
def no_dedupe_clients(clients: ClientsConfig) -> ClientsConfig:
    config = clients.model_copy(deep=True)
    config.tenants["clinic-a"] = config.tenant("clinic-a").model_copy(update={"dedupe_posts": False})
    return config


async def test_the_dedupe_window_can_be_switched_off_per_tenant(
    settings: Settings, no_dedupe_clients: ClientsConfig
) -> None:
    async with running(settings, no_dedupe_clients, with_worker=False) as gw:
        first = await gw.ehr("POST", "/Appointment", json=appointment())
        second = await gw.ehr("POST", "/Appointment", json=appointment())
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]
        other = await gw.ehr("POST", "/Appointment", json=appointment(), token=EHR_B)
        retried = await gw.ehr("POST", "/Appointment", json=appointment(), token=EHR_B)
        assert (other.status_code, retried.status_code) == (201, 200)  # clinic-b keeps the default
