"""The Appointment mapper as the platform sees it: statuses, times, people, modality, vendor quirks, write-backs."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance import fhir_models
from conformance.validator import validate_resource
from mappers.appointment import STATUS, Appointment, cancel, classify, r4_names, to_fhir, to_platform
from mappers.elements import merge_labels
from mappers.errors import MappingError
from mappers.family import tombstone as deleted_record
from mappers.model import CodeableText, Coding, Identifier, Ref, SecurityLabel
from mappers.participant import Participant
from mappers.registry import MAPPED
from mappers.vendors import VENDORS
from tests.mappers.conftest import corpus_params, ctx, hl7_example, sent

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


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
    # Sorted by system and code, whatever order the EHR sent them in.
    assert record.security == [
        SecurityLabel(system=ACT_CODE, code="PSY"),
        SecurityLabel(system=CONFIDENTIALITY, code="R", display="restricted"),
    ]
    assert deleted_record(record, ctx("2")).security == record.security
    assert json.loads(record.model_dump_json())["security"][0] == {
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
    assert record.security == [SecurityLabel(system=None, code="R"), SecurityLabel(system=ACT_CODE, code="")]


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


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("Appointment"))
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
    for vendor in VENDORS:
        # No spec example carries vendor data: every profile reads it alike, and leaves the same elements out.
        as_vendor = to_platform(resource, ctx(vendor=vendor))
        assert as_vendor.model_dump(exclude={"source"}) == record.model_dump(exclude={"source"})
        assert "status" not in as_vendor.unmapped and "participant" not in as_vendor.unmapped


# --- Modality, video links and vendor quirks -------------------------------------------------------------------

PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
SNOMED = "http://snomed.info/sct"
VIRTUAL_SERVICE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
REPLACES = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.replaces"
CERNER_EXT = "https://fhir-ehr.cerner.com/r4/StructureDefinition"
ATHENA_EXT = "https://fhir.athena.io/StructureDefinition"
PATIENT_LINK = "https://vmr.example.test/join/patient-7f3a"
PROVIDER_LINK = "https://vmr.example.test/host/provider-19c2"


def room(rid: str, label: str | None, link: str | None) -> dict[str, Any]:
    """Return a contained meeting room shaped like Oracle Health's Video Visit example (synthetic values)."""
    found: dict[str, Any] = {"resourceType": "HealthcareService", "id": rid}
    if label is not None:
        found["type"] = [{"text": label}]
    if link is not None:
        found["telecom"] = [
            {"system": "url", "value": link, "period": {"start": "2024-03-05T13:50:00Z", "end": "2024-03-05T15:00:00Z"}}
        ]
    return found


def cerner_video_visit(rooms: list[dict[str, Any]] | None = None, **elements: Any) -> dict[str, Any]:
    """Return an Oracle Health Video Visit as its documentation shows one: rooms in contained, flags as extensions.

    The read example on fhir.cerner.com lists the patient's room first; its PATCH notes say index 0 is the
    provider's link and index 1 the patient's.
    """
    rooms = (
        rooms
        if rooms is not None
        else [
            room("28", "Patient Virtual Meeting Room", PATIENT_LINK),
            room("31", "Provider Virtual Meeting Room", PROVIDER_LINK),
        ]
    )
    return appointment(
        contained=rooms,
        extension=[
            {"url": f"{CERNER_EXT}/action-comment", "valueString": ""},
            {"url": f"{CERNER_EXT}/is-cancelable", "valueBoolean": True},
            {"url": f"{CERNER_EXT}/is-reschedulable", "valueBoolean": False},
        ],
        serviceType=[
            {
                "coding": [{"system": "https://fhir.cerner.com/tenant-x/codeSet/14249", "code": "2572307911"}],
                "text": "Surgery Follow Up",
            }
        ],
        participant=[
            {"actor": {"reference": "Patient/p1"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr1"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": "Location/21304876", "display": "Clinic 1"}, "status": "accepted"},
            *(
                {"type": [{"text": r["type"][0]["text"]}], "actor": {"reference": f"#{r['id']}"}, "status": "accepted"}
                for r in rooms
                if "type" in r
            ),
        ],
        **elements,
    )


def coded(system: str, code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": system, "code": code}]}]


@pytest.mark.parametrize(
    ("service_type", "modality"),
    [
        (coded(PARTICIPATION_MODE, "FACE"), "in_person"),
        (coded(PARTICIPATION_MODE, "VIDEOCONF"), "video"),
        (coded(PARTICIPATION_MODE, "PHONE"), "phone"),
        (coded(SNOMED, "185317003"), "phone"),
        (coded(SNOMED, "448337001"), "video"),
        ([{"text": "Video Visit"}], "video"),
        ([{"coding": [{"code": "TH", "display": "Telehealth"}]}], "video"),
        ([{"text": "Virtual follow-up"}], "video"),
        ([{"text": "Telehealth - Phone"}], "phone"),
        ([{"text": "Audio-only check-in"}], "phone"),
        ([{"text": "Office Visit"}], "in_person"),
        ([{"text": "In-person intake"}], "in_person"),
        ([{"text": "Psychotherapy, 50 minutes"}], None),
        # A word that merely contains one of the signals is not the signal.
        ([{"text": "Videophoneless evaluation"}], None),
    ],
)
def test_modality_comes_from_the_visit_codes_and_words(service_type: list[Any], modality: str | None) -> None:
    assert mapped(serviceType=service_type).modality == modality


def test_modality_reads_appointment_type_and_service_category_too() -> None:
    assert mapped(appointmentType={"text": "Telephone visit"}).modality == "phone"
    assert mapped(serviceCategory=[{"text": "Telemedicine"}]).modality == "video"


def test_a_clinic_location_alone_does_not_make_a_visit_in_person() -> None:
    # Oracle Health's own video visit example has a clinic Location among its participants.
    record = mapped(participant=[{"actor": {"reference": "Location/l1", "display": "Clinic 1"}, "status": "accepted"}])
    assert record.modality is None


def test_remote_signals_win_over_in_person_and_video_over_phone() -> None:
    office_with_link = mapped(
        serviceType=[{"text": "Office Visit"}],
        extension=[
            {"url": VIRTUAL_SERVICE, "extension": [{"url": "address", "valueUrl": PATIENT_LINK}]},
        ],
    )
    assert (office_with_link.modality, office_with_link.video_link) == ("video", PATIENT_LINK)
    both = mapped(serviceType=[{"text": "Phone screen"}], appointmentType={"text": "Video visit"})
    assert both.modality == "video"


def test_standard_virtual_service_gives_the_link_and_its_channel() -> None:
    video = mapped(
        extension=[
            {
                "url": VIRTUAL_SERVICE,
                "extension": [
                    {"url": "channelType", "valueCoding": {"system": PARTICIPATION_MODE, "code": "VIDEOCONF"}},
                    {"url": "address", "valueUrl": PATIENT_LINK},
                ],
            }
        ]
    )
    assert (video.modality, video.video_link, video.unmapped) == ("video", PATIENT_LINK, [])
    phone = mapped(
        extension=[
            {
                "url": VIRTUAL_SERVICE,
                "extension": [
                    {"url": "channelType", "valueCoding": {"system": PARTICIPATION_MODE, "code": "PHONE"}},
                    {"url": "address", "valueContactPoint": {"system": "phone", "value": "+1 555 0100"}},
                ],
            }
        ]
    )
    # A phone number is not a link to open.
    assert (phone.modality, phone.video_link) == ("phone", None)
    native = mapped(virtualService=[{"addressUrl": PATIENT_LINK}])
    assert (native.modality, native.video_link) == ("video", PATIENT_LINK)


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "ftp://vmr.example.test/x", "https://", "vmr.example.test/join", "  ", 42]
)
def test_a_link_that_is_not_a_web_address_is_never_given_to_a_patient(link: Any) -> None:
    record = mapped(extension=[{"url": VIRTUAL_SERVICE, "extension": [{"url": "address", "valueUrl": link}]}])
    assert record.video_link is None
    assert record.modality == "video"


def test_oracle_health_cancel_and_reschedule_flags_come_from_its_extensions() -> None:
    record = to_platform(cerner_video_visit(), ctx(vendor="oracle-health"))
    assert (record.can_cancel, record.can_reschedule) == (True, False)
    assert record.unmapped == [f"extension('{CERNER_EXT}/action-comment')"]
    silent = to_platform(appointment(), ctx(vendor="oracle-health"))
    assert (silent.can_cancel, silent.can_reschedule) == (None, None)
    # A string where the documentation says boolean is not trusted either way.
    sloppy = appointment(extension=[{"url": f"{CERNER_EXT}/is-cancelable", "valueBoolean": "true"}])
    assert to_platform(sloppy, ctx(vendor="oracle-health")).can_cancel is None


def test_oracle_health_gives_the_patient_their_own_room_link_from_contained_data() -> None:
    record = to_platform(cerner_video_visit(), ctx(vendor="oracle-health"))
    assert (record.modality, record.video_link) == ("video", PATIENT_LINK)
    assert "contained" not in record.unmapped


def test_oracle_health_rooms_without_labels_follow_the_documented_indexes() -> None:
    # The PATCH documentation: contained index 0 is the provider's link, index 1 the patient's.
    rooms = [room("a", None, PROVIDER_LINK), room("b", None, PATIENT_LINK)]
    record = to_platform(cerner_video_visit(rooms), ctx(vendor="oracle-health"))
    assert record.video_link == PATIENT_LINK


def test_oracle_health_labels_win_over_indexes_and_never_leak_the_provider_link() -> None:
    # Labelled in the order of the documentation's read example, which contradicts its PATCH notes.
    rooms = [room("a", "Patient Virtual Meeting Room", PATIENT_LINK), room("b", "Provider Virtual Meeting Room", None)]
    assert to_platform(cerner_video_visit(rooms), ctx(vendor="oracle-health")).video_link == PATIENT_LINK
    # Only the provider's link is known yet: the visit is by video, and the patient has no link to be sent.
    provider_only = [room("a", None, None), room("b", "Provider Virtual Meeting Room", PROVIDER_LINK)]
    record = to_platform(cerner_video_visit(provider_only), ctx(vendor="oracle-health"))
    assert (record.modality, record.video_link) == ("video", None)


def test_oracle_health_room_label_may_sit_on_the_participant_that_references_it() -> None:
    rooms = [room("x1", None, PATIENT_LINK), room("x2", None, PROVIDER_LINK)]
    resource = cerner_video_visit(rooms)
    resource["participant"] += [
        {"type": [{"text": "Patient Virtual Meeting Room"}], "actor": {"reference": "#x1"}, "status": "accepted"},
        {"type": [{"text": "Provider Virtual Meeting Room"}], "actor": {"reference": "#x2"}, "status": "accepted"},
    ]
    assert to_platform(resource, ctx(vendor="oracle-health")).video_link == PATIENT_LINK


def test_oracle_health_reschedules_in_place_so_there_is_no_previous_appointment() -> None:
    # fhir.cerner.com: a reschedule replaces the slot of the same Appointment and adds reschedule-reason.
    before = to_platform(appointment(slot=[{"reference": "Slot/s-1"}]), ctx(vendor="oracle-health"))
    moved = appointment(
        start="2024-03-07T15:00:00Z",
        end="2024-03-07T15:50:00Z",
        slot=[{"reference": "Slot/s-2"}],
        extension=[
            {
                "url": f"{CERNER_EXT}/reschedule-reason",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                            "code": "pat",
                        }
                    ]
                },
            }
        ],
    )
    after = to_platform(moved, ctx("2", vendor="oracle-health"))
    assert classify(before, after) == ["appointment.rescheduled"]
    assert after.rescheduled_from is None


def test_rescheduled_from_is_read_from_the_r5_replaces_link_for_every_vendor() -> None:
    resource = appointment(
        extension=[{"url": REPLACES, "valueReference": {"reference": "Appointment/old-1"}}],
        basedOn=[{"reference": "ServiceRequest/sr-1"}],
    )
    for vendor in ("generic", "epic", "oracle-health", "athenahealth"):
        record = to_platform(resource, ctx(vendor=vendor))
        assert record.rescheduled_from == Ref(reference="Appointment/old-1"), vendor
    # basedOn is the order the visit fulfils (R4: ServiceRequest), never a previous appointment.
    assert mapped(basedOn=[{"reference": "ServiceRequest/sr-1"}]).rescheduled_from is None


def athena_appointment(**elements: Any) -> dict[str, Any]:
    """Return an athenahealth Appointment as its Core IG profiles it: practice and department extensions."""
    return appointment(
        id="a-195900.appointment-1207",
        extension=[
            {"url": f"{ATHENA_EXT}/ah-practice", "valueReference": {"reference": "Organization/a-1.Practice-195900"}},
            {
                "url": f"{ATHENA_EXT}/ah-department",
                "valueReference": {"reference": "Organization/a-195900.Department-1"},
            },
        ],
        **elements,
    )


def test_athenahealth_practice_and_department_come_from_its_extensions() -> None:
    record = to_platform(athena_appointment(), ctx(vendor="athenahealth"))
    assert record.practice == Ref(reference="Organization/a-1.Practice-195900")
    assert record.department == Ref(reference="Organization/a-195900.Department-1")
    assert record.unmapped == []


def test_athenahealth_department_may_be_the_location_participant() -> None:
    resource = appointment(
        participant=[
            {"actor": {"reference": "Patient/a-195900.E-14914"}, "status": "accepted"},
            {"actor": {"reference": "Location/a-195900.Department-150", "display": "Main St"}, "status": "accepted"},
        ]
    )
    record = to_platform(resource, ctx(vendor="athenahealth"))
    assert record.department == Ref(reference="Location/a-195900.Department-150", display="Main St")


def test_epic_csn_identifier_stays_on_the_record_source() -> None:
    csn = {"use": "usual", "system": "urn:oid:1.2.840.114350.1.13.861.1.7.3.698084.8", "value": "1038457"}
    record = to_platform(appointment(identifier=[csn]), ctx(vendor="epic"))
    assert [(i.system, i.value) for i in record.source.identifiers] == [(csn["system"], "1038457")]


@pytest.mark.parametrize("vendor", VENDORS)
def test_messy_vendor_data_never_raises_and_yields_no_link(vendor: str) -> None:
    record = to_platform(
        appointment(
            extension=[
                {"url": ["not", "a", "url"]},
                "junk",
                {"url": f"{CERNER_EXT}/is-cancelable"},
                {
                    "url": VIRTUAL_SERVICE,
                    "extension": [{"url": {"a": 1}}, {"url": "address", "valueUrl": ["x"]}, {"url": "channelType"}],
                },
                {"url": REPLACES, "valueReference": "Appointment/1"},
                {"url": f"{ATHENA_EXT}/ah-practice", "valueReference": {}},
            ],
            contained=[
                "x",
                {"resourceType": "HealthcareService", "id": ["1"], "type": "Patient", "telecom": {"system": "url"}},
                {"resourceType": "HealthcareService", "telecom": [{"system": "url", "value": "javascript:x"}]},
            ],
            participant=[{"actor": {"reference": "#"}, "type": "x"}, {"actor": {"reference": ["#1"]}}],
            virtualService="https://vmr.example.test/x",
            replaces={"reference": "Appointment/zz"},
        ),
        ctx(vendor=vendor),
    )
    assert (record.video_link, record.can_cancel, record.practice) == (None, None, None)
    assert record.rescheduled_from == Ref(reference="Appointment/zz")
    assert "extension('')" in record.unmapped


def test_a_tenants_vendor_changes_the_mapping_of_the_same_payload() -> None:
    payload = cerner_video_visit()
    as_oracle = to_platform(payload, ctx(vendor="oracle-health"))
    as_generic = to_platform(payload, ctx(vendor="generic"))
    assert (as_oracle.can_cancel, as_oracle.can_reschedule, as_oracle.video_link) == (True, False, PATIENT_LINK)
    # The generic profile knows no vendor extensions or contained rooms: it says nothing rather than guess.
    assert (as_generic.can_cancel, as_generic.can_reschedule, as_generic.video_link) == (None, None, None)
    assert as_generic.modality is None
    assert f"extension('{CERNER_EXT}/is-cancelable')" in as_generic.unmapped
    assert "contained" in as_generic.unmapped
    athena = athena_appointment()
    assert to_platform(athena, ctx(vendor="athenahealth")).practice is not None
    assert to_platform(athena, ctx(vendor="oracle-health")).practice is None


def test_unmapped_lists_what_the_record_does_not_carry() -> None:
    record = mapped(
        text={"status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'>x</div>"},
        requestedPeriod=[{"start": "2024-03-01T00:00:00Z", "end": "2024-03-09T00:00:00Z"}],
        priority=5,
        modifierExtension=[{"url": "https://ehr.example.test/no-reminders", "valueBoolean": True}],
        participant=[
            {"actor": {"reference": "Patient/p1"}, "status": "accepted", "period": {"start": "2024-03-05T14:00:00Z"}}
        ],
    )
    assert record.unmapped == [
        "modifierExtension('https://ehr.example.test/no-reminders')",
        "participant.period",
        "priority",
        "requestedPeriod",
    ]
    assert mapped().unmapped == []


def test_classify_new_video_link_or_permission_is_updated_but_a_new_narrative_is_not() -> None:
    first = to_platform(cerner_video_visit(), ctx(vendor="oracle-health"))
    rooms = [room("28", "Patient Virtual Meeting Room", PATIENT_LINK + "-2"), room("31", "Provider", PROVIDER_LINK)]
    relinked = to_platform(cerner_video_visit(rooms), ctx("2", vendor="oracle-health"))
    assert relinked.video_link == PATIENT_LINK + "-2"
    assert classify(first, relinked) == ["appointment.updated"]
    no_cancel = cerner_video_visit()
    no_cancel["extension"][1]["valueBoolean"] = False
    assert classify(first, to_platform(no_cancel, ctx("2", vendor="oracle-health"))) == ["appointment.updated"]
    unchanged = mapped("2", requestedPeriod=[{"start": "2024-03-01T00:00:00Z"}])
    assert unchanged.unmapped != mapped().unmapped
    assert classify(mapped(), unchanged) == []


# --- Write-backs: request, booking, cancellation ----------------------------------------------------------------


def platform_request(**fields: Any) -> Appointment:
    """Return an appointment request as a platform service would send it: patient, clinician, type, reason."""
    values: dict[str, Any] = {
        "id": "req-1",
        "status": "requested",
        "fhir_status": "",
        "patient": Ref(reference="Patient/p1"),
        "practitioners": [Ref(reference="Practitioner/dr1")],
        "service_type": [CodeableText(text="Psychotherapy follow-up")],
        "reason": [CodeableText(text="Medication check")],
        "source": ctx().source("Appointment", "req-1"),
    }
    return Appointment(**(values | fields))


def errors(resource: dict[str, Any]) -> list[str]:
    return [f"{i.expression}: {i.diagnostics}" for i in validate_resource(resource) if i.severity in ("error", "fatal")]


def test_request_is_written_as_a_proposed_appointment_awaiting_its_participants() -> None:
    written = to_fhir(platform_request(), ctx())
    assert written["status"] == "proposed"
    assert written["participant"] == [
        {"actor": {"reference": "Patient/p1"}, "status": "needs-action"},
        {"actor": {"reference": "Practitioner/dr1"}, "status": "needs-action"},
    ]
    assert written["serviceType"] == [{"text": "Psychotherapy follow-up"}]
    assert errors(written) == []
    back = to_platform(written, ctx())
    assert (back.status, back.patient, back.practitioners) == (
        "requested",
        Ref(reference="Patient/p1"),
        [Ref(reference="Practitioner/dr1")],
    )


def test_booking_is_written_as_booked_with_its_time_slot_and_accepted_participants() -> None:
    booking = platform_request(
        status="scheduled",
        start="2024-03-05T14:00:00Z",
        end="2024-03-05T14:50:00Z",
        slot=[Ref(reference="Slot/s-9")],
    )
    written = to_fhir(booking, ctx())
    assert (written["status"], written["start"], written["slot"]) == (
        "booked",
        "2024-03-05T14:00:00Z",
        [{"reference": "Slot/s-9"}],
    )
    assert {p["status"] for p in written["participant"]} == {"accepted"}
    assert errors(written) == []


def test_write_back_keeps_labels_links_and_vendor_extensions_but_not_ehr_permissions() -> None:
    label = SecurityLabel(system=ACT_CODE, code="PSY")
    request = platform_request(
        security=[label],
        modality="video",
        video_link=PATIENT_LINK,
        rescheduled_from=Ref(reference="Appointment/old-1"),
        practice=Ref(reference="Organization/a-1.Practice-195900"),
        department=Ref(reference="Organization/a-195900.Department-1"),
        can_cancel=False,
    )
    athena = to_fhir(request, ctx(vendor="athenahealth"))
    assert athena["meta"] == {"security": [{"system": ACT_CODE, "code": "PSY"}]}
    urls = [e["url"] for e in athena["extension"]]
    assert urls == [VIRTUAL_SERVICE, REPLACES, f"{ATHENA_EXT}/ah-practice", f"{ATHENA_EXT}/ah-department"]
    assert errors(athena) == []
    back = to_platform(athena, ctx(vendor="athenahealth"))
    assert (back.security, back.video_link, back.rescheduled_from) == ([label], PATIENT_LINK, request.rescheduled_from)
    # Whether a patient may cancel is the EHR's to say; a write-back never claims it.
    assert back.can_cancel is None
    # A vendor without practice extensions gets none.
    assert [e["url"] for e in to_fhir(request, ctx(vendor="oracle-health"))["extension"]] == [VIRTUAL_SERVICE, REPLACES]


def cancellation(stored: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """Cancel a stored Appointment as the write-back does: on its R4B model, then exported."""
    return fhir_models.written(r4_names(stored), fhir_models.Appointment, lambda typed: cancel(typed, reason))


def test_cancellation_cancels_the_stored_appointment_with_the_reason_and_keeps_the_rest() -> None:
    stored = appointment(
        meta={"versionId": "3", "security": [{"system": ACT_CODE, "code": "PSY"}]},
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Booked</div>'},
        extension=[{"url": f"{CERNER_EXT}/is-cancelable", "valueBoolean": True}],
    )
    before = copy.deepcopy(stored)
    cancelled = cancellation(stored, "  Patient feels better  ")
    assert stored == before, "the stored resource must not change"
    assert (cancelled["status"], cancelled["cancelationReason"]) == ("cancelled", {"text": "Patient feels better"})
    assert cancelled["meta"] == stored["meta"]
    assert cancelled["participant"] == stored["participant"] and cancelled["extension"] == stored["extension"]
    assert "text" not in cancelled, "a generated narrative saying 'Booked' must not survive"
    assert errors(cancelled) == []
    record = to_platform(cancelled, ctx("2"))
    assert (record.status, record.cancellation_reason) == ("cancelled", CodeableText(text="Patient feels better"))
    assert classify(to_platform(stored, ctx()), record) == ["appointment.cancelled"]


def test_cancellation_without_a_reason_keeps_the_ehrs_reason_and_refuses_other_types() -> None:
    stored = appointment(status="booked", cancelationReason={"text": "Clinic closed"})
    assert cancellation(stored, None)["cancelationReason"] == {"text": "Clinic closed"}
    assert "cancelationReason" not in cancellation(appointment(), "   ")
    with pytest.raises(MappingError):
        r4_names({"resourceType": "Communication", "id": "c1"})


def test_cancellation_writes_r5s_spelling_of_the_reason_under_r4s_name() -> None:
    stored = appointment(status="booked", cancellationReason={"text": "Clinic closed"})
    cancelled = cancellation(stored, None)
    assert cancelled["cancelationReason"] == {"text": "Clinic closed"} and "cancellationReason" not in cancelled
    assert errors(cancelled) == []


# --- Properties -------------------------------------------------------------------------------------------------

# Words without e, o or v can spell no modality signal ("phone", "video", "virtual", "in person", "office"...).
WORDS = st.text(alphabet="abcdfghijklmnpqrstuwxyz0123456789 -", min_size=1, max_size=12).filter(str.strip)
IDS = st.text(alphabet="abcdfghijklmnpqrstuwxyz0123456789-.", min_size=1, max_size=16)
KINDS = st.sampled_from(
    ["patient", "practitioner", "practitioner_role", "related_person", "location", "device", "healthcare_service"]
)
TYPE_OF = {
    "patient": "Patient",
    "practitioner": "Practitioner",
    "practitioner_role": "PractitionerRole",
    "related_person": "RelatedPerson",
    "location": "Location",
    "device": "Device",
    "healthcare_service": "HealthcareService",
}
MODALITY_CODE = {"in_person": "FACE", "video": "VIDEOCONF", "phone": "PHONE"}
RANK = {"in_person": 1, "phone": 2, "video": 3}


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# Each drawn element says something, as the mapper's own output always does.
codings = st.builds(
    Coding,
    system=optional(st.sampled_from(["http://example.test/cs", "urn:oid:1.2.3"])),
    code=WORDS,
    display=optional(WORDS),
)
concepts_ = st.builds(CodeableText, text=WORDS, codings=st.lists(codings, max_size=2)) | st.builds(
    CodeableText, text=st.none(), codings=st.lists(codings, min_size=1, max_size=2)
)
references = st.builds(Ref, reference=st.builds(lambda i: f"Appointment/{i}", IDS), display=optional(WORDS))


@st.composite
def actors(draw: st.DrawFn, kind: str) -> Ref:
    display = draw(optional(WORDS))
    how = draw(st.sampled_from(["literal", "uuid", "display"]))
    if how == "display" and display is not None:
        return Ref(reference=None, display=display)
    if how == "uuid":
        return Ref(reference=f"urn:uuid:{draw(st.uuids())}", display=display)
    return Ref(reference=f"{TYPE_OF[kind]}/{draw(IDS)}", display=display)


@st.composite
def participants(draw: st.DrawFn) -> Participant:
    common = {
        "required": draw(optional(st.sampled_from(["required", "optional", "information-only"]))),
        # R4 requires a participant's status; a write-back fills a missing one, so records carry one.
        "status": draw(st.sampled_from(["accepted", "declined", "tentative", "needs-action"])),
        "roles": draw(st.lists(concepts_, max_size=2)),
    }
    if draw(st.booleans()):
        kind = draw(KINDS)
        return Participant(actor=draw(actors(kind)), kind=kind, **common)
    other = draw(
        st.sampled_from([None, Ref(reference=f"Group/{draw(IDS)}"), Ref(reference=None, display="Interpreter")])
    )
    return Participant(actor=other, kind="other", **common)


@st.composite
def platform_records(draw: st.DrawFn, vendor: str, timezone: str | None) -> Appointment:
    """Draw a record in the form the mapper itself produces (see the property test for what that excludes)."""
    fhir_status, status = draw(st.sampled_from([*STATUS.items(), ("rescheduled", "unknown"), ("", "unknown")]))
    times = draw(st.lists(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)), max_size=2))
    start, end = ([f"{t.replace(microsecond=0).isoformat()}Z" for t in times] + [None, None])[:2]
    minutes = draw(optional(st.integers(min_value=1, max_value=600)))
    if minutes is None and len(times) == 2 and times[1].replace(microsecond=0) > times[0].replace(microsecond=0):
        minutes = int((times[1].replace(microsecond=0) - times[0].replace(microsecond=0)).total_seconds() // 60)
    people = draw(st.lists(participants(), max_size=4))
    service_type = draw(st.lists(concepts_, max_size=2))
    # Modality is derived: a coded visit type says it, and a write-back adds a virtual service for a remote one.
    coded_as = draw(st.sampled_from([None, "in_person", "video", "phone"]))
    if coded_as is not None:
        service_type.append(CodeableText(codings=[Coding(system=PARTICIPATION_MODE, code=MODALITY_CODE[coded_as])]))
    allowed = [m for m in ("video", "phone", "in_person") if coded_as is not None and RANK[m] >= RANK[coded_as]]
    modality = draw(st.sampled_from(allowed or [None, "video", "phone"]))
    link = draw(optional(st.builds(lambda i: f"https://vmr.example.test/{i}", IDS))) if modality == "video" else None
    athena = vendor == "athenahealth"
    fields = {
        "id": draw(IDS),
        "status": status,
        "fhir_status": fhir_status,
        "start": start,
        "end": end,
        "timezone": timezone,
        "minutes_duration": minutes,
        "patient": next((p.actor for p in people if p.kind == "patient"), None),
        "practitioners": [p.actor for p in people if p.actor and p.kind in ("practitioner", "practitioner_role")],
        "participants": people,
        "service_type": service_type,
        "appointment_type": draw(optional(concepts_)),
        "service_category": draw(st.lists(concepts_, max_size=2)),
        "specialty": draw(st.lists(concepts_, max_size=2)),
        "reason": draw(st.lists(concepts_, max_size=2)),
        "description": draw(optional(WORDS)),
        "patient_instruction": draw(optional(WORDS)),
        "comment": draw(optional(WORDS)),
        "cancellation_reason": draw(optional(concepts_)),
        "based_on": draw(st.lists(references, max_size=2)),
        "slot": draw(st.lists(references, max_size=2)),
        "modality": modality,
        "video_link": link,
        "rescheduled_from": draw(optional(references)),
        "practice": draw(optional(references)) if athena else None,
        "department": draw(optional(references)) if athena else None,
        "security": draw(
            st.lists(
                st.builds(
                    SecurityLabel,
                    system=optional(st.sampled_from([CONFIDENTIALITY, ACT_CODE])),
                    code=st.sampled_from(["R", "V", "PSY", "SUD", "ETH", "42CFRPart2", ""]),
                    display=optional(WORDS),
                ),
                max_size=4,
                unique_by=lambda label: (label.system, label.code),
            ).map(lambda found: merge_labels([found]))
        ),
    }
    identifiers_ = draw(
        st.lists(
            st.builds(Identifier, system=optional(st.just("urn:oid:1.2.3.4")), value=IDS, use=st.none()),
            max_size=2,
        )
    )
    context = ctx(vendor=vendor, timezone=timezone)
    return Appointment(**fields, source=context.source("Appointment", fields["id"], identifiers_))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), vendor=st.sampled_from(list(VENDORS)), timezone=st.sampled_from([None, "America/Chicago"]))
def test_platform_to_fhir_to_platform_gives_back_the_same_record(
    data: st.DataObject, vendor: str, timezone: Any
) -> None:
    """Every platform-visible field comes back. Excluded by construction, and why:

    - ``can_cancel`` / ``can_reschedule``: the EHR's decision, never written back (always None here);
    - ``practice`` / ``department``: only vendors that define them (athenahealth) write and read them;
    - ``modality``: derived, never stored; ``in_person`` has no R4 element, so it travels only in a visit code,
      and a code that says more (video over phone over in person) decides;
    - ``timezone``: the tenant's configuration, not the resource;
    - ``unmapped`` is empty: a write-back carries only what the record has;
    - a participant always has a status (R4 requires one; a write-back fills a missing one).
    """
    context = ctx(vendor=vendor, timezone=timezone)
    record = data.draw(platform_records(vendor, timezone))
    written = to_fhir(record, context)
    assert json.loads(json.dumps(written)) == written
    assert to_platform(written, context) == record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), vendor=st.sampled_from(list(VENDORS)), timezone=st.sampled_from([None, "America/Chicago"]))
def test_an_appointment_sent_as_its_r4b_model_gives_back_the_same_record(
    data: st.DataObject, vendor: str, timezone: Any
) -> None:
    """What a write-back sends (the R4B model's export) reads back the same. These records are not all valid R4
    (the builders' tests generate valid requests): one the model refuses is never sent, so it is left out."""
    context = ctx(vendor=vendor, timezone=timezone)
    record = data.draw(platform_records(vendor, timezone))
    try:
        exported = sent(to_fhir(record, context), vendor)
    except fhir_models.Refused:
        assume(False)
    assert to_platform(exported, context) == record


labels = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "system": st.one_of(st.sampled_from([CONFIDENTIALITY, ACT_CODE, "", "  "]), st.integers()),
            "code": st.one_of(st.sampled_from(["R", "V", "PSY", "SUD", "42CFRPart2", "", " "]), st.none()),
            "display": st.text(max_size=5),
        },
    ),
    st.sampled_from(["R", "PSY"]),
)


def expected_label(label: Any) -> tuple[str | None, str]:
    if isinstance(label, str):
        return (None, label)
    system, code = label.get("system"), label.get("code")
    return (
        system if isinstance(system, str) and system.strip() else None,
        code if isinstance(code, str) and code.strip() else "",
    )


@settings(max_examples=200, deadline=None)
@given(
    top=st.one_of(st.lists(labels, max_size=5), labels),
    inner=st.lists(st.lists(labels, max_size=3), max_size=3),
    vendor=st.sampled_from(list(VENDORS)),
)
def test_fhir_to_platform_never_drops_a_security_label(top: Any, inner: list[Any], vendor: str) -> None:
    contained = [
        {"resourceType": "HealthcareService", "id": f"c{i}", "meta": {"security": s}} for i, s in enumerate(inner)
    ]
    resource = appointment(meta={"security": top}, contained=contained)
    record = to_platform(resource, ctx(vendor=vendor))
    kept = {(label.system, label.code) for label in record.security}
    given_labels = [*(top if isinstance(top, list) else [top]), *(label for labels_ in inner for label in labels_)]
    assert {expected_label(label) for label in given_labels} <= kept
    assert {(label.system, label.code) for label in deleted_record(record, ctx("2", vendor=vendor)).security} == kept


def test_a_bare_string_security_label_is_kept() -> None:
    from mappers.elements import security_labels

    assert [label.code for label in security_labels({"meta": {"security": "R"}})] == ["R"]


def _old_participant(value: object) -> Participant:
    """``participant`` as it was before ``participant_fields``: the Participant validated on its own."""
    from mappers.elements import MAPPING, concepts, ref_fields, text
    from mappers.participant import kind_of

    if not isinstance(value, MAPPING):
        return Participant()
    actor = value.get("actor")
    who = ref_fields(actor)
    roles = value.get("type")
    return Participant.model_validate(
        {
            "actor": who,
            "kind": kind_of(actor) if who is not None else "other",
            "required": text(value.get("required")),
            "status": text(value.get("status")),
            "roles": concepts(roles) if roles is not None else [],
        }
    )


@pytest.mark.parametrize(
    "value",
    [
        "x",
        {},
        {"actor": {"reference": "Patient/1"}, "status": "accepted"},
        {"actor": {"reference": "https://ehr.example/fhir/PractitionerRole/7/_history/2", "display": "Dr A"}},
        {"actor": {"reference": "urn:uuid:1b2c", "type": "RelatedPerson"}, "required": "required"},
        {"actor": {"reference": "urn:uuid:1b2c", "type": "http://hl7.org/fhir/StructureDefinition/Location"}},
        {"actor": {"display": "Room 4", "type": "Device"}, "type": [{"text": "interpreter"}]},
        {"actor": {"reference": " "}, "status": "tentative"},
        {"actor": "Patient/1"},
    ],
)
def test_participants_built_inside_the_appointment_match_the_old_participant(value: object) -> None:
    resource = {"resourceType": "Appointment", "id": "a1", "status": "booked", "participant": [value]}
    record = to_platform(resource, ctx())
    assert record.participants == [_old_participant(value)]
