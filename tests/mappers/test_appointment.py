"""The Appointment mapper as the platform sees it: statuses, UTC times, refs, labels and change events."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mappers.appointment import classify, deleted_record, to_platform
from mappers.context import MapContext
from mappers.errors import MappingError
from mappers.model import Appointment, CodeableText, Ref, SecurityLabel
from mappers.registry import MAPPED

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def corpus_dir() -> Path:
    """Return the shared FHIR corpus folder, from GATEWAY_CORPUS_DIR or beside the repository."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
    return Path(os.environ.get("GATEWAY_CORPUS_DIR", default))


def ctx(version: str = "1", **overrides: Any) -> MapContext:
    fields: dict[str, Any] = {
        "tenant": "clinic-a",
        "vendor": "generic",
        "timezone": "America/New_York",
        "version_id": version,
        "last_updated": f"2024-01-0{version}T12:00:00Z",
    }
    return MapContext(**(fields | overrides))


def appointment(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": "booked",
        "start": "2024-03-05T14:00:00Z",
        "end": "2024-03-05T14:50:00Z",
        "participant": [
            {"actor": {"reference": "Patient/p1", "display": "Pat"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr1", "display": "Dr One"}, "status": "accepted"},
        ],
    }
    return resource | elements


def hl7_example(name: str) -> dict[str, Any]:
    path = corpus_dir() / "hl7-r4-spec-examples" / name
    if not path.is_file():
        pytest.skip(f"FHIR corpus not found at {path.parent}; set GATEWAY_CORPUS_DIR")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return loaded


@pytest.mark.parametrize(
    ("fhir_status", "status"),
    [
        ("proposed", "requested"),
        ("pending", "requested"),
        ("waitlist", "waitlisted"),
        ("booked", "scheduled"),
        ("arrived", "checked_in"),
        ("checked-in", "checked_in"),
        ("fulfilled", "completed"),
        ("noshow", "no_show"),
        ("cancelled", "cancelled"),
        ("entered-in-error", "void"),
    ],
)
def test_status_is_normalized_and_the_fhir_code_kept(fhir_status: str, status: str) -> None:
    record = to_platform(appointment(status=fhir_status), ctx())
    assert (record.status, record.fhir_status) == (status, fhir_status)


def test_unknown_or_missing_status_maps_to_unknown() -> None:
    assert to_platform(appointment(status="rescheduled"), ctx()).status == "unknown"
    resource = appointment()
    del resource["status"]
    assert to_platform(resource, ctx()).status == "unknown"


def test_start_with_offset_is_converted_to_utc() -> None:
    record = to_platform(appointment(start="2013-12-10T09:00:00-05:00", end="2013-12-10T11:00:00.250-05:00"), ctx())
    assert (record.start, record.end) == ("2013-12-10T14:00:00Z", "2013-12-10T16:00:00Z")
    assert record.timezone == "America/New_York"


def test_local_time_without_offset_is_read_in_the_clinic_zone_or_dropped() -> None:
    resource = appointment(start="2024-07-01T09:00:00", end="2024-07-01")
    assert to_platform(resource, ctx()).start == "2024-07-01T13:00:00Z"
    assert to_platform(resource, ctx()).end is None
    # Without the clinic's zone a local time names no instant; a guessed UTC would remind at the wrong hour.
    assert to_platform(resource, ctx(timezone=None)).start is None


def test_minutes_duration_is_given_or_derived_from_start_and_end() -> None:
    assert to_platform(appointment(minutesDuration=30), ctx()).minutes_duration == 30
    assert to_platform(appointment(), ctx()).minutes_duration == 50


def test_hl7_example_maps_to_a_scheduled_visit_with_its_people_and_reason() -> None:
    record = to_platform(hl7_example("Appointment-example.json"), ctx())
    assert record.id == "example"
    assert record.status == "scheduled"
    assert (record.start, record.end) == ("2013-12-10T09:00:00Z", "2013-12-10T11:00:00Z")
    assert record.patient == Ref(reference="Patient/example", display="Peter James Chalmers")
    assert record.practitioners == [Ref(reference="Practitioner/example", display="Dr Adam Careful")]
    assert [p.kind for p in record.participants] == ["patient", "practitioner", "location"]
    assert [r.text for r in record.reason] == ["Severe burn of left ear"]
    assert record.description == "Discussion on the results of your recent MRI"
    assert record.appointment_type is not None
    assert record.appointment_type.codings[0].code == "FOLLOWUP"
    assert record.based_on == [Ref(reference="ServiceRequest/myringotomy")]
    assert record.source.fhir_url == "Appointment/example/_history/1"


def test_hl7_request_keeps_coded_reason_slot_and_identifier() -> None:
    record = to_platform(hl7_example("Appointment-examplereq.json"), ctx())
    assert record.status == "requested"
    assert record.start is None
    assert record.reason[0].text == "Clinical Review"
    assert record.slot == [Ref(reference="Slot/example")]
    assert record.source.identifiers[0].value == "123"
    # A participant slot with a role and no actor yet (a clinician still to be assigned).
    assert record.participants[1].actor is None
    assert record.participants[1].roles[0].codings[0].code == "ATND"


def test_participant_kind_comes_from_the_reference_type() -> None:
    record = to_platform(
        appointment(
            participant=[
                {"actor": {"reference": "https://ehr.example/FHIR/R4/PractitionerRole/r1"}},
                {"actor": {"reference": "urn:uuid:7f1c", "type": "Patient"}},
                {"actor": {"reference": "RelatedPerson/rp1/_history/3"}},
                {"actor": {"display": "Phone Call"}},
            ]
        ),
        ctx(),
    )
    assert [p.kind for p in record.participants] == [
        "practitioner_role",
        "patient",
        "related_person",
        "other",
    ]
    assert record.patient == Ref(reference="urn:uuid:7f1c")
    assert record.practitioners == [Ref(reference="https://ehr.example/FHIR/R4/PractitionerRole/r1")]


def test_security_labels_are_all_kept() -> None:
    labels = [
        {"system": CONFIDENTIALITY, "code": "R", "display": "restricted"},
        {"system": ACT_CODE, "code": "PSY"},
    ]
    record = to_platform(appointment(meta={"versionId": "7", "security": labels}), ctx())
    assert record.security == [
        SecurityLabel(system=CONFIDENTIALITY, code="R", display="restricted"),
        SecurityLabel(system=ACT_CODE, code="PSY"),
    ]
    assert deleted_record(record, ctx("2")).security == record.security
    assert json.loads(record.model_dump_json())["security"][1] == {
        "system": ACT_CODE,
        "code": "PSY",
        "display": None,
    }


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "Appointment",
            "id": "odd",
            "status": 3,
            "start": 20240101,
            "end": "not a time",
            "minutesDuration": "thirty",
            "participant": ["nonsense", {"actor": "Patient/1"}, {"type": {"text": "interpreter"}}],
            "serviceType": {"coding": [{"code": "52"}]},
            "reasonCode": [None, {"coding": "x"}],
            "reasonReference": [{"reference": "Condition/1"}],
            "meta": {"security": [{"system": ACT_CODE}, "R"]},
        },
        ctx(),
    )
    assert record.status == "unknown"
    assert record.start is None and record.end is None and record.minutes_duration is None
    assert record.patient is None
    assert record.participants[2].roles == [CodeableText(text="interpreter")]
    assert record.service_type[0].codings[0].code == "52"
    assert record.reason == []
    # A label with its code missing, or a bare code, still marks the record as restricted.
    assert record.security == [SecurityLabel(system=ACT_CODE, code=""), SecurityLabel(system=None, code="R")]


@pytest.mark.parametrize(
    "resource", [{"resourceType": "Patient", "id": "p1"}, {"id": "x"}, [], {"resourceType": "Appointment"}]
)
def test_input_that_is_not_an_appointment_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


def mapped(version: str = "1", **elements: Any) -> Appointment:
    return to_platform(appointment(**elements), ctx(version))


def test_classify_first_version_is_created() -> None:
    assert classify(None, mapped()) == ["appointment.created"]


def test_classify_moved_start_is_rescheduled() -> None:
    moved = mapped("2", start="2024-03-06T14:00:00Z", end="2024-03-06T14:50:00Z")
    assert classify(mapped(), moved) == ["appointment.rescheduled"]


def test_classify_cancel_wins_over_a_moved_start() -> None:
    assert classify(mapped(), mapped("2", status="cancelled")) == ["appointment.cancelled"]
    cancelled_and_moved = mapped("2", status="cancelled", start="2024-03-06T14:00:00Z")
    assert classify(mapped(), cancelled_and_moved) == ["appointment.cancelled"]


def test_classify_no_show_and_completed() -> None:
    assert classify(mapped(), mapped("2", status="noshow")) == ["appointment.no_show"]
    assert classify(mapped(status="arrived"), mapped("2", status="fulfilled")) == ["appointment.completed"]


def test_classify_deleted_and_recreated() -> None:
    previous = mapped()
    tombstone = deleted_record(previous, ctx("2"))
    assert tombstone.deleted and tombstone.source.version_id == "2"
    assert tombstone.source.fhir_url == "Appointment/appt-1/_history/2"
    assert classify(previous, tombstone) == ["appointment.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("3")) == ["appointment.created"]


def test_classify_changed_description_is_updated() -> None:
    assert classify(mapped(), mapped("2", description="Bring your medication list")) == ["appointment.updated"]


def test_classify_new_version_with_nothing_visible_changed_is_none() -> None:
    new_version = to_platform(appointment(), ctx("2", ehr_version_id="9", ehr_last_updated="2024-01-02T11:59:00Z"))
    assert new_version.source != mapped().source
    assert classify(mapped(), new_version) == []


def test_registry_gives_the_worker_appointment_index_fields() -> None:
    family = MAPPED["Appointment"]
    assert (family.record_type, family.route) == ("appointment", "appointments")
    record = family.to_platform(appointment(start="1970-01-01T00:01:00Z"), ctx())
    assert family.index_fields(record) == {
        "patient": "Patient/p1",
        "sort": 60.0,
        "status": "scheduled",
    }
    assert family.model.model_validate_json(record.model_dump_json()) == record


def corpus_appointments() -> Iterator[Any]:
    root = corpus_dir()
    if not root.is_dir():
        yield pytest.param(
            None,
            id="no-corpus",
            marks=pytest.mark.skip(reason=f"FHIR corpus not found at {root}; set GATEWAY_CORPUS_DIR"),
        )
        return
    for path in sorted(root.rglob("*.json")):
        text = path.read_text(encoding="utf-8-sig")
        if '"Appointment"' not in text:
            continue
        for where, resource in _find_appointments(json.loads(text), ""):
            yield pytest.param(resource, id=f"{path.relative_to(root)}{where}")


def _find_appointments(node: object, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    # Appointments sit at the top, in Bundle entries, in nested Bundles and in `contained`.
    if isinstance(node, dict):
        if node.get("resourceType") == "Appointment":
            yield where, node
        for key, value in node.items():
            yield from _find_appointments(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _find_appointments(value, f"{where}[{index}]")


@pytest.mark.corpus
@pytest.mark.parametrize("resource", list(corpus_appointments()))
def test_every_corpus_appointment_maps(resource: dict[str, Any]) -> None:
    original = copy.deepcopy(resource)
    record = to_platform(resource, ctx())
    assert resource == original, "the mapper must not modify its input"
    assert record.id == resource["id"]
    assert record.status != "unknown"
    assert record.start is None or record.start.endswith("Z")
    assert Appointment.model_validate_json(record.model_dump_json()) == record
    assert classify(None, record) == ["appointment.created"]
    assert classify(record, to_platform(resource, ctx("2"))) == []
