"""Bundles posted to the FHIR base: transactions are all-or-nothing, batches answer per entry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import exceptions as redis_errors

from tests.conftest import Gateway
from tests.gateway.fixtures import appointment, hl7_appointment, post_entry, put_entry, transaction

PATIENT_URN = "urn:uuid:7c1e3b0e-8f0a-4c55-9b7e-2f6d7a8b9c01"
PRACTITIONER_URN = "urn:uuid:0f8e6c2a-1b3d-4e5f-8a9b-c0d1e2f3a4b5"


def _hl7_transaction() -> dict[str, Any]:
    appt = hl7_appointment()
    appt["participant"][0]["actor"]["reference"] = PATIENT_URN
    appt["participant"][1]["actor"]["reference"] = PRACTITIONER_URN
    patient = {"resourceType": "Patient", "name": [{"family": "Synthetic", "given": ["Pat"]}]}
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Example", "prefix": ["Dr"]}]}
    return transaction(
        post_entry(appt, "urn:uuid:5d1c7c0c-4b5f-4a8e-9d6e-1a2b3c4d5e6f"),
        post_entry(patient, PATIENT_URN),
        post_entry(practitioner, PRACTITIONER_URN),
    )


async def test_hl7_appointment_transaction_reaches_the_feed_as_scheduled(gateway: Gateway) -> None:
    response = await gateway.ehr("POST", "", json=_hl7_transaction())
    assert response.status_code == 200
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 3
    patient_loc, practitioner_loc = (answer["entry"][i]["response"]["location"] for i in (1, 2))
    appt_id = answer["entry"][0]["response"]["location"].split("/")[1]

    stored = (await gateway.ehr("GET", f"/Appointment/{appt_id}")).json()
    refs = [p["actor"]["reference"] for p in stored["participant"][:2]]
    assert refs == [patient_loc.rsplit("/_history", 1)[0], practitioner_loc.rsplit("/_history", 1)[0]]

    await gateway.drain()
    events = (await gateway.platform("/changes?types=appointment.*")).json()["events"]
    assert [e["type"] for e in events] == ["appointment.created"]
    record = events[0]["record"]
    assert record["status"] == "scheduled"
    assert record["id"] == appt_id
    assert record["patient"]["reference"] == refs[0]
    assert record["start"].endswith("Z")


async def test_a_transaction_with_one_bad_entry_stores_nothing(gateway: Gateway) -> None:
    bundle = transaction(
        post_entry(appointment(identifier=[{"system": "s", "value": "good"}])),
        post_entry(appointment(identifier=[{"system": "s", "value": "also-good"}])),
        post_entry(appointment(status="bogus-status")),
    )
    response = await gateway.ehr("POST", "", json=bundle)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    paths = [p for issue in outcome["issue"] for p in issue.get("expression", [])]
    assert "Bundle.entry[2].resource.status" in paths
    assert (await gateway.ehr("GET", "/Appointment")).json()["total"] == 0
    await gateway.drain()
    assert (await gateway.platform("/changes")).json()["events"] == []


async def test_transaction_honours_if_none_exist_and_resolves_references_to_the_match(
    gateway: Gateway,
) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "MRN-9"}]}
    await gateway.ehr("PUT", "/Patient/known", json={**patient, "id": "known"})
    urn = "urn:uuid:11111111-2222-4333-8444-555555555555"
    appt = appointment(participant=[{"actor": {"reference": urn}, "status": "accepted"}])
    bundle = transaction(post_entry(patient, urn, ifNoneExist="identifier=urn:mrn|MRN-9"), post_entry(appt))
    answer = (await gateway.ehr("POST", "", json=bundle)).json()
    assert answer["entry"][0]["response"]["status"] == "200 OK"
    assert answer["entry"][0]["response"]["location"].startswith("Patient/known/")
    appt_id = answer["entry"][1]["response"]["location"].split("/")[1]
    stored = (await gateway.ehr("GET", f"/Appointment/{appt_id}")).json()
    assert stored["participant"][0]["actor"]["reference"] == "Patient/known"


async def test_the_same_transaction_pushed_twice_gives_one_event(gateway: Gateway) -> None:
    bundle = _hl7_transaction()
    first = (await gateway.ehr("POST", "", json=bundle)).json()
    second = (await gateway.ehr("POST", "", json=bundle)).json()
    assert [e["response"]["location"] for e in first["entry"]] == [e["response"]["location"] for e in second["entry"]]
    await gateway.drain()
    events = (await gateway.platform("/changes")).json()["events"]
    # One event per mapped resource of the Bundle, none for the second push.
    assert len(events) == len({(e["record_type"], e["record_id"]) for e in events})
    assert [e["type"] for e in events if e["record_type"] == "appointment"] == ["appointment.created"]


async def test_transaction_runs_deletes_first_and_reads_last(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Appointment/old", json=appointment(id="old"))
    bundle = transaction(
        {"request": {"method": "GET", "url": "Appointment/new"}},
        put_entry(appointment(id="new")),
        {"request": {"method": "DELETE", "url": "Appointment/old"}},
    )
    answer = (await gateway.ehr("POST", "", json=bundle)).json()
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["200 OK", "201 Created", "204 No Content"]
    assert answer["entry"][0]["resource"]["id"] == "new"


async def test_batch_answers_each_entry_on_its_own(gateway: Gateway) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            put_entry(appointment(id="b1")),
            put_entry(appointment(id="b2", status="not-a-status")),
            {"request": {"method": "GET", "url": "Appointment/missing"}},
        ],
    }
    answer = (await gateway.ehr("POST", "", json=bundle)).json()
    assert answer["type"] == "batch-response"
    assert [e["response"]["status"] for e in answer["entry"]] == [
        "201 Created",
        "400 Bad Request",
        "404 Not Found",
    ]
    issue = answer["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert (await gateway.ehr("GET", "/Appointment/b1")).status_code == 200


async def test_a_collection_imports_good_entries_and_reports_bad_ones(gateway: Gateway) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": appointment(id="c1")}, {"resource": appointment(id="c2", status="nope")}],
    }
    answer = (await gateway.ehr("POST", "", json=bundle)).json()
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created", "400 Bad Request"]
    assert (await gateway.ehr("GET", "/Appointment/c1")).status_code == 200


async def test_one_entry_that_fails_to_store_never_fails_the_rest_of_a_collection(gateway: Gateway) -> None:
    # An entry the validator refuses. (A lone surrogate escape, which once crashed the store here, now makes the
    # whole body unreadable Unicode text: a 400 for the request, as test_bad_input shows.)
    poison = appointment(id="c-poison", status="not-a-status")
    entries = [{"resource": appointment(id="c-ok1")}, {"resource": poison}, {"resource": appointment(id="c-ok2")}]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    response = await gateway.ehr("POST", "", content=json.dumps(bundle).encode(),
                                 headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0] == statuses[2] == "201 Created" and statuses[1].startswith("4")
    assert response.json()["entry"][1]["response"]["outcome"]["issue"][0]["severity"] == "error"
    for rid in ("c-ok1", "c-ok2"):
        assert (await gateway.ehr("GET", f"/Appointment/{rid}")).status_code == 200
    assert (await gateway.ehr("GET", "/Appointment/c-poison")).status_code == 404


async def test_any_error_storing_one_entry_of_a_collection_is_that_entrys_answer(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = gateway.services.store
    real_apply = store.apply

    async def apply(tenant: str, operations: list[Any]) -> Any:
        if any(getattr(op, "rid", None) == "c-cursed" for op in operations):
            raise KeyError("a bug met one resource")
        return await real_apply(tenant, operations)

    monkeypatch.setattr(store, "apply", apply)
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": appointment(id="c-a")}, {"resource": appointment(id="c-cursed")}]}  # fmt: skip
    response = await gateway.ehr("POST", "", json=bundle)
    assert response.status_code == 200
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created", "500"]
    assert "a bug met" not in response.text
    assert (await gateway.ehr("GET", "/Appointment/c-a")).status_code == 200


async def test_a_transaction_writing_one_resource_twice_is_refused_with_the_entry(gateway: Gateway) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "a", "value": "1"}, {"system": "b", "value": "2"}]}
    await gateway.ehr("PUT", "/Patient/twice", json={**patient, "id": "twice"})
    bundle = transaction(
        {"resource": patient, "request": {"method": "PUT", "url": "Patient?identifier=a|1"}},
        {"resource": {**patient, "active": True}, "request": {"method": "PUT", "url": "Patient?identifier=b|2"}},
    )
    response = await gateway.ehr("POST", "", json=bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert (await gateway.ehr("GET", "/Patient/twice")).json()["meta"]["versionId"] == "1"


async def test_an_import_listing_one_resource_twice_keeps_both_versions(gateway: Gateway) -> None:
    first = {"resourceType": "Patient", "id": "p45", "meta": {"versionId": "1"}, "active": False}
    second = {"resourceType": "Patient", "id": "p45", "meta": {"versionId": "2"}, "active": True}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": first}, {"resource": second}]}
    answer = (await gateway.ehr("POST", "", json=bundle)).json()
    assert [e["response"]["location"] for e in answer["entry"]] == ["Patient/p45/_history/1", "Patient/p45/_history/2"]
    assert (await gateway.ehr("GET", "/Patient/p45")).json()["active"] is True


async def test_operations_and_unsupported_conditions_in_bundles_are_named_not_supported(gateway: Gateway) -> None:
    bundle = transaction(
        {"resource": {"resourceType": "Parameters"}, "request": {"method": "POST", "url": "ValueSet/$lookup"}},
        {"resource": appointment(), "request": {"method": "PUT", "url": "Appointment?status=booked"}},
        post_entry(appointment(), ifNoneExist="status=booked"),
    )
    outcome = (await gateway.ehr("POST", "", json=bundle)).json()
    found = {(i["code"], i["expression"][0]) for i in outcome["issue"]}
    assert found == {
        ("not-supported", "Bundle.entry[0].request.url"),
        ("not-supported", "Bundle.entry[1].request.url"),
        ("not-supported", "Bundle.entry[2].request.ifNoneExist"),
    }


async def test_prefer_return_operation_outcome_fills_every_entry_outcome(gateway: Gateway) -> None:
    prefer = {"Prefer": "return=OperationOutcome"}
    tx = transaction(put_entry(appointment(id="oo1")), {"request": {"method": "DELETE", "url": "Appointment/none"}})
    answer = (await gateway.ehr("POST", "", json=tx, headers=prefer)).json()
    outcomes = [e["response"]["outcome"] for e in answer["entry"]]
    assert [o["resourceType"] for o in outcomes] == ["OperationOutcome"] * 2
    assert "Appointment/oo1: created" in outcomes[0]["issue"][0]["diagnostics"]
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [put_entry(appointment(id="oo1")), put_entry(appointment(id="oo2", status="nope"))]}  # fmt: skip
    answer = (await gateway.ehr("POST", "", json=batch, headers=prefer)).json()
    [same, bad] = [e["response"] for e in answer["entry"]]
    assert "unchanged" in same["outcome"]["issue"][0]["diagnostics"]
    assert bad["status"].startswith("400") and bad["outcome"]["issue"][0]["severity"] == "error"
    plain = (await gateway.ehr("POST", "", json=batch)).json()
    assert "outcome" not in plain["entry"][0]["response"]


async def test_conditional_references_resolve_to_the_one_match(gateway: Gateway) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "CR-1"}]}
    await gateway.ehr("PUT", "/Patient/cr1", json={**patient, "id": "cr1"})
    appt = appointment(participant=[{"actor": {"reference": "Patient?identifier=urn:mrn|CR-1"}, "status": "accepted"}])
    answer = await gateway.ehr("POST", "", json=transaction(post_entry(appt)))
    assert answer.status_code == 200, answer.text
    appt_id = answer.json()["entry"][0]["response"]["location"].split("/")[1]
    stored = (await gateway.ehr("GET", f"/Appointment/{appt_id}")).json()
    assert stored["participant"][0]["actor"]["reference"] == "Patient/cr1"
    assert [e["resource"]["id"] for e in (await gateway.ehr("GET", "/Appointment?patient=cr1")).json()["entry"]] == [
        appt_id
    ]
    # A patient created in the same transaction is a match too.
    new = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "CR-2"}]}
    later = appointment(participant=[{"actor": {"reference": "Patient?identifier=urn:mrn|CR-2"}, "status": "accepted"}])
    answer = await gateway.ehr("POST", "", json=transaction(post_entry(new), post_entry(later)))
    assert answer.status_code == 200, answer.text
    patient_id = answer.json()["entry"][0]["response"]["location"].split("/")[1]
    later_id = answer.json()["entry"][1]["response"]["location"].split("/")[1]
    stored = (await gateway.ehr("GET", f"/Appointment/{later_id}")).json()
    assert stored["participant"][0]["actor"]["reference"] == f"Patient/{patient_id}"


async def test_a_conditional_reference_matching_none_or_several_fails_the_transaction(gateway: Gateway) -> None:
    for rid in ("dup1", "dup2"):
        body = {"resourceType": "Patient", "id": rid, "identifier": [{"system": "urn:mrn", "value": "TWICE"}]}
        await gateway.ehr("PUT", f"/Patient/{rid}", json=body)
    keep = post_entry(appointment(identifier=[{"system": "urn:x", "value": "kept-out"}]))
    for reference, status in (("Patient?identifier=urn:mrn|NOBODY", 400), ("Patient?identifier=urn:mrn|TWICE", 412)):
        appt = appointment(participant=[{"actor": {"reference": reference}, "status": "accepted"}])
        response = await gateway.ehr("POST", "", json=transaction(keep, post_entry(appt)))
        assert response.status_code == status, response.text
        assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert (await gateway.ehr("GET", "/Appointment?identifier=urn:x|kept-out")).json()["total"] == 0
    other = appointment(participant=[{"actor": {"reference": "Patient?name=Smith"}, "status": "accepted"}])
    unsupported = await gateway.ehr("POST", "", json=transaction(post_entry(other)))
    assert unsupported.status_code == 400


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
async def test_a_transaction_whose_commit_reply_is_lost_answers_what_was_done(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    """A Redis too busy to reply in time (or a broken connection) after the commit ran: the client is told its
    Bundle is in, not 503, so nothing it sent looks lost; when the commit did not run, 503 and nothing stored."""
    store = gateway.services.store
    commit = store._committer.commit

    async def reply_lost(plan: Any) -> list[str]:
        if applied:
            await commit(plan)
        raise redis_errors.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(store._committer, "commit", reply_lost)
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "lost-reply-1"}]}
    bundle = transaction(
        post_entry(patient, "urn:uuid:8a0c4e0e-5a48-4d1e-9b8e-0c1f3ad9a001"),
        put_entry(appointment(id="lost-reply-a", participant=[
            {"actor": {"reference": "urn:uuid:8a0c4e0e-5a48-4d1e-9b8e-0c1f3ad9a001"}, "status": "accepted"}])),
    )  # fmt: skip
    answer = await gateway.ehr("POST", "", json=bundle)
    if not applied:
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert (await gateway.ehr("GET", "/Appointment/lost-reply-a")).status_code == 404
        return
    assert answer.status_code == 200
    assert [e["response"]["status"] for e in answer.json()["entry"]] == ["201 Created", "201 Created"]
    monkeypatch.undo()  # the client retries anyway: the same answer's resources, no second version
    again = (await gateway.ehr("POST", "", json=bundle)).json()
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    assert [e["response"]["location"] for e in again["entry"]] == locations
    history = (await gateway.ehr("GET", "/Appointment/lost-reply-a/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["1"]


async def test_a_wide_integer_in_a_transaction_with_references_is_stored_exactly(gateway: Gateway) -> None:
    # A decimal written as a 23-digit integer in an entry whose reference the transaction rewrites.
    wide = 12345678901234567890123
    extension = [{"url": "http://example.org/fhir/StructureDefinition/units", "valueDecimal": wide}]
    urn = "urn:uuid:3b0f1a6e-7d1c-4a9e-8b2f-5c6d7e8f9a01"
    appt = appointment(extension=extension, participant=[{"actor": {"reference": urn}, "status": "accepted"}])
    patient = {"resourceType": "Patient", "name": [{"family": "Synthetic"}]}
    body = json.dumps(transaction(post_entry(appt), post_entry(patient, urn)))
    answer = await gateway.ehr("POST", "", content=body, headers={"content-type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    appt_id = answer.json()["entry"][0]["response"]["location"].split("/")[1]
    stored = await gateway.ehr("GET", f"/Appointment/{appt_id}")
    assert f'"valueDecimal":{wide}' in stored.text.replace(" ", "")
    assert stored.json()["participant"][0]["actor"]["reference"].startswith("Patient/")


async def test_retried_creates_that_point_at_each_other_find_their_first_ids_in_turn(gateway: Gateway) -> None:
    """A plain create is a retry when its content, with references given their final ids, was stored: an entry
    pointing at a retried entry is compared with that entry's first id, along a chain of three."""
    patient_urn, appt_urn = (
        "urn:uuid:9e0b3c4d-0000-4000-8000-00000000a001",
        "urn:uuid:9e0b3c4d-0000-4000-8000-00000000a002",
    )

    def bundle(family: str) -> dict[str, Any]:
        patient = {"resourceType": "Patient", "name": [{"family": family}]}
        appt = appointment(participant=[{"actor": {"reference": patient_urn}, "status": "accepted"}])
        encounter = {"resourceType": "Encounter", "status": "finished",
                     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                     "subject": {"reference": patient_urn}, "appointment": [{"reference": appt_urn}]}  # fmt: skip
        return transaction(post_entry(encounter), post_entry(appt, appt_urn), post_entry(patient, patient_urn))

    async def push(family: str) -> list[tuple[str, str]]:
        answer = await gateway.ehr("POST", "", json=bundle(family))
        assert answer.status_code == 200, answer.text
        return [(e["response"]["status"], e["response"]["location"]) for e in answer.json()["entry"]]

    first, again = await push("Chain"), await push("Chain")
    assert [s for s, _ in first] == ["201 Created"] * 3 and [s for s, _ in again] == ["200 OK"] * 3
    assert [loc for _, loc in again] == [loc for _, loc in first]
    other, other_again = await push("Other"), await push("Other")  # a new Patient: the entries pointing at it are new
    assert [s for s, _ in other] == ["201 Created"] * 3 and [s for s, _ in other_again] == ["200 OK"] * 3
    assert [loc for _, loc in other_again] == [loc for _, loc in other]
    assert not {loc for _, loc in other} & {loc for _, loc in first}
