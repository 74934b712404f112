"""Vendor profiles as data: every quirk the mappers rely on, as each vendor documents it, one test per quirk."""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources

import pytest

from mappers.vendors import VENDORS, WRITEBACKS, VendorProfile, profile

EPIC_CUSTOMER = "urn:oid:1.2.840.114350.1.13.861.1"


def test_every_vendor_file_loads_and_sets_only_known_fields() -> None:
    known = {f.name for f in fields(VendorProfile)}
    for vendor in VENDORS:
        raw = json.loads(resources.files("mappers.vendors").joinpath(f"{vendor}.json").read_text(encoding="utf-8"))
        assert set(raw) <= known, vendor
        assert profile(vendor).name == vendor


def test_an_unknown_vendor_gets_the_generic_profile() -> None:
    assert profile("meditech") == profile("generic")


TOPIC = {
    "identifier_systems": "identifiers",
    "identifier_patterns": "identifiers",
    "appointment_cancelable_extension": "appointment.extensions",
    "appointment_reschedulable_extension": "appointment.extensions",
    "telehealth_contained": "appointment.telehealth",
    "telehealth_labels": "appointment.telehealth",
    "practice_extension": "practice",
    "department_extension": "department",
    "department_reference": "department",
    "communication_body_as_attachment": "communication.body",
    "careplan_description_in_narrative": "careplan.description",
    "qr_numbers_as_decimal": "qr_numbers_as_decimal",
    "writebacks": "writebacks",
    "search_rules": "search",
    "search_params": "search",
}


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_quirk_a_vendor_file_sets_names_where_it_is_documented(vendor: str) -> None:
    raw = json.loads(resources.files("mappers.vendors").joinpath(f"{vendor}.json").read_text(encoding="utf-8"))
    sources = profile(vendor).sources
    assert all(text.strip() for text in sources.values())
    missing = {key for key in raw if key != "sources" and TOPIC[key] not in sources}
    assert not missing, f"{vendor} sets {sorted(missing)} without saying where the vendor documents it"


@pytest.mark.parametrize(
    ("system", "role"),
    [
        # Epic's sandbox MRN and another customer's: the customer and environment sit in the middle of the OID.
        ("urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "mrn"),
        (f"{EPIC_CUSTOMER}.7.5.737384.14", "mrn"),
        # A visit's contact serial number, on Encounter and Appointment identifiers.
        (f"{EPIC_CUSTOMER}.7.3.698084.8", "csn"),
        # Another Epic identifier (an internal patient id) is neither, although the coarse prefix covers it.
        (f"{EPIC_CUSTOMER}.7.2.698084", None),
        ("urn:oid:1.2.840.114350.1.1", None),
        ("http://hl7.org/fhir/sid/us-npi", "npi"),
        ("urn:oid:2.16.840.1.113883.4.1", None),
        (None, None),
    ],
)
def test_epic_organization_oids_name_the_identifier_role(system: str | None, role: str | None) -> None:
    assert profile("epic").identifier_role(system) == role


def test_epic_coarse_mrn_prefix_is_kept_for_readers_of_identifier_systems() -> None:
    epic = profile("epic")
    assert epic.identifier_systems["mrn"] == ["urn:oid:1.2.840.114350.1.13.*"]
    # Another vendor does not read Epic OIDs at all.
    assert profile("oracle-health").identifier_role(f"{EPIC_CUSTOMER}.7.5.737384.14") is None


def test_epic_sends_questionnaire_numbers_as_decimals() -> None:
    assert [v for v in VENDORS if profile(v).qr_numbers_as_decimal] == ["epic"]


def test_oracle_health_names_its_cancel_and_reschedule_extensions() -> None:
    cerner = profile("oracle-health")
    assert cerner.appointment_cancelable_extension == "https://fhir-ehr.cerner.com/r4/StructureDefinition/is-cancelable"
    assert cerner.appointment_reschedulable_extension == (
        "https://fhir-ehr.cerner.com/r4/StructureDefinition/is-reschedulable"
    )
    assert all(profile(v).appointment_cancelable_extension is None for v in VENDORS if v != "oracle-health")


def test_oracle_health_puts_the_provider_link_at_index_0_and_the_patients_at_1() -> None:
    cerner = profile("oracle-health")
    assert cerner.telehealth_contained == {"provider": 0, "patient": 1}
    assert set(cerner.telehealth_labels) == {"patient", "provider"}


def test_oracle_health_sends_communication_bodies_as_base64_attachments() -> None:
    assert [v for v in VENDORS if profile(v).communication_body_as_attachment] == ["oracle-health"]


def test_oracle_health_carries_careplan_descriptions_only_in_the_narrative() -> None:
    assert [v for v in VENDORS if profile(v).careplan_description_in_narrative] == ["oracle-health"]


def test_athenahealth_names_practice_and_department_and_its_patient_ids() -> None:
    athena = profile("athenahealth")
    assert athena.practice_extension == "https://fhir.athena.io/StructureDefinition/ah-practice"
    assert athena.department_extension == "https://fhir.athena.io/StructureDefinition/ah-department"
    assert athena.identifier_role("https://fhir.athena.io/sid/ah-patient") == "patient"
    assert athena.department_reference is not None


def test_writebacks_are_what_each_ehr_accepts() -> None:
    for vendor in VENDORS:
        assert set(profile(vendor).writebacks) <= set(WRITEBACKS), vendor
    assert profile("generic").writebacks == list(WRITEBACKS)
    # athenahealth takes no Communication, and neither it nor Oracle Health takes a CarePlan write.
    assert "message" not in profile("athenahealth").writebacks
    assert "treatment_plan" not in profile("athenahealth").writebacks
    assert "treatment_plan" not in profile("oracle-health").writebacks
    # Oracle Health updates only existing social-history responses: no survey write-back.
    assert "survey_response" not in profile("oracle-health").writebacks
    assert all("appointment" in profile(v).writebacks for v in VENDORS)
