"""The SMART on FHIR Python client (fhirclient, its R4 model classes) against a real ``fhir-gateway run``."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhirclient.models.appointment import Appointment
from fhirclient.models.bundle import Bundle
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRServer

from tests.interop.conftest import Server
from tests.interop.scenario import SYSTEM, searches, seeds

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _server(server: Server) -> FHIRServer:
    fhir = FHIRServer(None, base_uri=server.base)
    fhir.session.headers.update(server.headers)
    return fhir


def _ids(search: FHIRSearch, fhir: FHIRServer) -> list[str]:
    return [r.id for r in search.perform_resources_iter(fhir)]


def test_model_classes_create_read_update_delete(server: Server, tag: str) -> None:
    fhir = _server(server)
    patient = Patient({"name": [{"family": f"Model{tag}"}], "gender": "other"})
    created = Patient(patient.create(fhir))
    assert created.id and created.meta.versionId == "1"
    read = Patient.read(created.id, fhir)
    assert read.name[0].family == f"Model{tag}"
    read.name.append(HumanName({"family": f"Alias{tag}"}))
    read.birthDate = None
    updated = Patient(read.update(fhir))
    assert updated.meta.versionId == "2" and len(updated.name) == 2
    read.delete(fhir)
    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(created.id, fhir)
    assert gone.value.response.status_code == 410


def test_a_stale_copy_saved_by_the_model_is_applied_not_dropped(server: Server, tag: str) -> None:
    fhir = _server(server)
    created = Patient(Patient({"name": [{"family": f"Lost{tag}"}]}).create(fhir))
    copy_a, copy_b = Patient.read(created.id, fhir), Patient.read(created.id, fhir)
    for gender in ("female", "other"):
        copy_b.gender = gender
        copy_b = Patient(copy_b.update(fhir))
    copy_a.birthDate = None
    copy_a.active = True
    copy_a.update(fhir)
    assert Patient.read(created.id, fhir).active is True


def test_searches_and_paging_with_model_classes(server: Server, tag: str) -> None:
    fhir = _server(server)
    for body in seeds(tag):
        fhir.put_json(f"{body['resourceType']}/{body['id']}", body)
    for rtype, params, expected, ordered in searches(tag):
        search = FHIRSearch(_model(rtype), params)
        found = _ids(search, fhir)
        assert (found if ordered else sorted(found)) == (expected if ordered else sorted(expected)), (rtype, params)
    paged = FHIRSearch(Appointment, {"patient": f"pa-{tag}", "_count": "1"})
    assert sorted(_ids(paged, fhir)) == [f"ap1-{tag}", f"ap3-{tag}"]
    struct = Patient.where(struct={"birthdate": {"$gt": "1989-12-31"}, "identifier": f"{SYSTEM}|A-{tag}"})
    assert _ids(struct, fhir) == [f"pa-{tag}"]


def test_transaction_and_batch_bundles_as_models(server: Server, tag: str) -> None:
    fhir = _server(server)
    urn = "urn:uuid:7d2c9e40-0000-4000-8000-00000000c11e"
    transaction = Bundle({"type": "transaction", "entry": [
        {"fullUrl": urn,
         "resource": {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"X-{tag}"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYSTEM}|X-{tag}"}},
        {"resource": {"resourceType": "Appointment", "status": "proposed",
                      "participant": [{"actor": {"reference": urn}, "status": "needs-action"}]},
         "request": {"method": "POST", "url": "Appointment"}}]})  # fmt: skip
    answer = Bundle(transaction.create(fhir))
    assert answer.type == "transaction-response"
    assert [e.response.status for e in answer.entry] == ["201 Created", "201 Created"]
    patient_id = answer.entry[0].response.location.split("/")[1]
    appointment = Appointment.read(answer.entry[1].response.location.split("/")[1], fhir)
    assert appointment.participant[0].actor.reference == f"Patient/{patient_id}"
    batch = Bundle({"type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{patient_id}"}},
        {"request": {"method": "DELETE", "url": f"Patient?identifier={SYSTEM}|X-{tag}"}}]})  # fmt: skip
    done = Bundle(batch.create(fhir))
    assert [e.response.status[:3] for e in done.entry] == ["200", "204"]
    history: dict[str, Any] = fhir.request_json(f"Patient/{patient_id}/_history")
    assert Bundle(history).type == "history" and [e["request"]["method"] for e in history["entry"]] == [
        "DELETE", "POST"
    ]  # fmt: skip


def _model(rtype: str) -> Any:
    from fhirclient.models import encounter, observation, practitioner

    return {
        "Appointment": Appointment,
        "Patient": Patient,
        "Encounter": encounter.Encounter,
        "Observation": observation.Observation,
        "Practitioner": practitioner.Practitioner,
    }[rtype]
