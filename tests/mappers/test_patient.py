"""The Patient mapper as the platform sees it: who the patient is, how to reach them, merges and labels."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers.errors import MappingError, MissingId
from mappers.family import tombstone as deleted_record
from mappers.model import CodeableText, Coding, Ref, SecurityLabel
from mappers.patient import Patient, classify, index_fields, to_platform
from mappers.person import ContactPoint
from mappers.registry import MAPPED
from mappers.vendors import profile
from tests.mappers.conftest import corpus_params, ctx, hl7_example

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
EPIC_MRN = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
EPIC_EPI = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0"
EPIC_OTHER = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.99"


def patient(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": "urn:mrn", "value": "M1"}],
        "name": [{"use": "official", "family": "Rivera", "given": ["Ana", "Luz"]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1990-04-02",
    }
    return resource | elements


def mapped(version: str = "1", **elements: Any) -> Patient:
    return to_platform(patient(**elements), ctx(version))


def mr(system: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": system, "value": value, **extra}


def test_hl7_example_maps_name_mrn_birth_date_gender_and_phones() -> None:
    record = to_platform(hl7_example("Patient-example.json"), ctx())
    assert record.id == "example"
    assert record.name is not None
    assert (record.name.text, record.name.family, record.name.given) == (
        "Peter James Chalmers",
        "Chalmers",
        ["Peter", "James"],
    )
    assert record.mrn == "12345"
    assert (record.birth_date, record.gender, record.active, record.deceased) == ("1974-12-25", "male", True, False)
    # The home entry has a use and no number: nothing to call.
    assert [t.value for t in record.telecom] == ["(03) 5555 6473", "(03) 3410 5613", "(03) 5555 8834"]
    assert record.managing_organization == Ref(reference="Organization/1")
    assert record.unmapped == ["_birthDate", "address", "contact"]
    assert record.source.fhir_url == "Patient/example/_history/1"
    assert record.source.identifiers[0].value == "12345"


# Names


def test_official_name_wins_over_usual_and_display_is_built_from_its_parts() -> None:
    record = mapped(
        name=[
            {"use": "usual", "given": ["Annie"]},
            {"use": "official", "family": "Rivera", "given": ["Ana"], "prefix": ["Ms"], "suffix": ["PhD"]},
        ]
    )
    assert record.name is not None
    assert record.name.text == "Ms Ana Rivera PhD"
    assert (record.name.use, record.name.prefix, record.name.suffix) == ("official", ["Ms"], ["PhD"])


def test_usual_name_when_no_official_and_given_text_wins() -> None:
    record = mapped(name=[{"use": "nickname", "given": ["Nana"]}, {"use": "usual", "text": "Ana R.", "given": ["Ana"]}])
    assert record.name is not None
    assert (record.name.text, record.name.given, record.name.use) == ("Ana R.", ["Ana"], "usual")


def test_a_past_name_is_used_only_when_it_is_all_there_is() -> None:
    old = {"use": "maiden", "family": "Lopez", "given": ["Ana"]}
    current = mapped(name=[old, {"family": "Rivera", "given": ["Ana"]}]).name
    assert current is not None and current.text == "Ana Rivera"
    only = mapped(name=[old]).name
    assert only is not None and only.text == "Ana Lopez"
    assert mapped(name=[{"use": "official"}, {"given": ["  "]}]).name is None


# Identifiers


def test_mrn_is_recognised_by_its_v2_type_code_whatever_the_system() -> None:
    record = mapped(identifier=[{"system": "urn:ssn", "value": "999"}, mr("https://any.example/ids", "A-7")])
    assert record.mrn == "A-7"
    assert [i.kind for i in record.identifiers] == [None, "mrn"]


def test_mrn_type_code_under_the_older_v2_system_counts() -> None:
    coded = {"type": {"coding": [{"system": "http://hl7.org/fhir/v2/0203", "code": "MR"}]}, "system": "s", "value": "9"}
    assert mapped(identifier=[coded]).mrn == "9"


def test_epic_mrn_is_recognised_by_the_organization_oid_prefix() -> None:
    identifier = [{"use": "usual", "system": EPIC_MRN, "value": "  203713"}]
    epic = to_platform(patient(identifier=identifier), ctx(vendor="epic"))
    assert epic.mrn == "203713"
    assert epic.identifiers[0].kind == "mrn"
    # Without the Epic profile the OID is just another identifier system.
    generic = to_platform(patient(identifier=identifier), ctx(vendor="generic"))
    assert (generic.mrn, generic.identifiers[0].kind) == (None, None)


def test_an_epic_oid_that_is_no_patient_identifier_is_no_mrn() -> None:
    near_misses = [
        {"system": "urn:oid:1.2.840.114350.1.130.9", "value": "not Epic"},
        {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8", "value": "a visit number"},
    ]
    record = to_platform(patient(identifier=near_misses), ctx(vendor="epic"))
    assert record.mrn is None
    assert "mrn" not in [i.kind for i in record.identifiers]


def test_among_epic_identifiers_the_one_typed_mrn_is_the_mrn() -> None:
    identifier = [
        {"use": "usual", "type": {"text": "EPI"}, "system": EPIC_EPI, "value": "E4007"},
        {"use": "usual", "type": {"text": "MRN"}, "system": EPIC_MRN, "value": "203713"},
        {"type": {"coding": [{"system": V2_0203, "code": "SS"}]}, "system": EPIC_OTHER, "value": "123-45"},
    ]
    record = to_platform(patient(identifier=identifier), ctx(vendor="epic"))
    assert record.mrn == "203713"
    # A v2 type code says what an identifier is; the OID prefix must not turn a social security number into an MRN.
    assert [i.kind for i in record.identifiers] == ["mrn", "mrn", None]


def test_the_current_mrn_wins_over_an_old_one() -> None:
    record = mapped(
        identifier=[mr("urn:mrn", "OLD-1", use="old"), mr("urn:mrn", "NEW-2"), mr("urn:mrn", "T", use="temp")]
    )
    assert record.mrn == "NEW-2"
    assert [i.value for i in record.identifiers] == ["OLD-1", "NEW-2", "T"]


def test_no_mrn_when_none_is_recognisable() -> None:
    assert mapped(identifier=[{"system": "http://example.org/ids", "value": "1"}]).mrn is None
    assert mapped(identifier=[{"type": {"text": "whatever"}}]).identifiers == []


# Demographics and reachability


@pytest.mark.parametrize(
    ("given_date", "kept"),
    [
        ("1990", "1990"),
        ("1990-04", "1990-04"),
        ("1990-04-02", "1990-04-02"),
        ("1990-13-01", None),
        ("04/02/1990", None),
        (19900402, None),
    ],
)
def test_birth_date_is_kept_as_a_fhir_date_or_dropped(given_date: Any, kept: str | None) -> None:
    assert mapped(birthDate=given_date).birth_date == kept


@pytest.mark.parametrize(
    ("given_gender", "kept"), [("female", "female"), (" Male ", "male"), ("unknown", "unknown"), ("F", None), (1, None)]
)
def test_gender_is_an_administrative_gender_code(given_gender: Any, kept: str | None) -> None:
    assert mapped(gender=given_gender).gender == kept


def test_telecom_keeps_system_value_use_and_rank_and_drops_entries_without_a_value() -> None:
    record = mapped(
        telecom=[
            {"system": "SMS", "value": " 555-0101 ", "use": "Mobile", "rank": 1},
            {"system": "email", "value": "ana@example.org", "use": "home", "rank": "first"},
            {"system": "phone", "use": "home"},
            "555-0199",
        ]
    )
    assert record.telecom == [
        ContactPoint(system="sms", value="555-0101", use="mobile", rank=1),
        ContactPoint(system="email", value="ana@example.org", use="home"),
    ]


SPANISH = {"coding": [{"system": "urn:ietf:bcp:47", "code": "es", "display": "Spanish"}]}
ENGLISH = {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}], "text": "English"}


def test_preferred_language_is_the_one_marked_preferred() -> None:
    record = mapped(communication=[{"language": ENGLISH}, {"language": SPANISH, "preferred": True}])
    assert record.preferred_language == CodeableText(
        codings=[Coding(system="urn:ietf:bcp:47", code="es", display="Spanish")]
    )


def test_preferred_language_falls_back_to_the_first_language_given() -> None:
    record = mapped(
        communication=[{"preferred": True}, {"language": ENGLISH, "preferred": False}, {"language": SPANISH}]
    )
    assert record.preferred_language is not None and record.preferred_language.text == "English"
    assert mapped().preferred_language is None


def test_merged_into_comes_from_a_replaced_by_link() -> None:
    record = mapped(
        link=[
            {"other": {"reference": "Patient/other"}, "type": "seealso"},
            {"other": {"reference": "Patient/survivor", "display": "Ana Rivera"}, "type": "replaced-by"},
        ]
    )
    assert record.merged_into == Ref(reference="Patient/survivor", display="Ana Rivera")
    assert mapped(link=[{"other": {"reference": "Patient/old"}, "type": "replaces"}]).merged_into is None


def test_active_is_true_unless_the_ehr_says_false() -> None:
    assert mapped().active is True
    assert mapped(active=False).active is False


def test_deceased_from_the_flag_or_a_date() -> None:
    assert mapped().deceased is False
    assert mapped(deceasedBoolean=True).deceased is True
    assert mapped(deceasedDateTime="2023-05-01").deceased is True
    assert mapped(deceasedBoolean=False).deceased is False


def test_general_practitioners_are_kept_as_references() -> None:
    record = mapped(generalPractitioner=[{"reference": "Practitioner/dr-1"}, {"reference": "PractitionerRole/r-1"}])
    assert record.general_practitioners == [Ref(reference="Practitioner/dr-1"), Ref(reference="PractitionerRole/r-1")]


US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"


def test_athenahealth_patient_names_its_practice_and_department() -> None:
    athena = profile("athenahealth")
    assert athena.practice_extension and athena.department_extension
    role, systems = next(iter(athena.identifier_systems.items()))
    resource = patient(
        identifier=[{"system": systems[0].rstrip("*"), "value": "a-1.E-12345"}],
        extension=[
            {"url": athena.practice_extension, "valueReference": {"reference": "Organization/a-1.Practice-1"}},
            {"url": athena.department_extension, "valueReference": {"reference": "Organization/a-1.Department-2"}},
            {"url": US_CORE_RACE, "extension": [{"url": "text", "valueString": "Mixed"}]},
        ],
    )
    record = to_platform(resource, ctx(vendor="athenahealth"))
    assert record.practice == Ref(reference="Organization/a-1.Practice-1")
    assert record.department == Ref(reference="Organization/a-1.Department-2")
    assert record.identifiers[0].kind == role
    assert record.unmapped == [f"extension('{US_CORE_RACE}')"]
    # Another vendor's feed does not use these extensions: they stay in the FHIR resource, listed as unmapped.
    generic = to_platform(resource, ctx())
    assert (generic.practice, generic.department, generic.identifiers[0].kind) == (None, None, None)
    assert len(generic.unmapped) == 3


def test_unmapped_lists_elements_and_each_extension_and_modifier_extension() -> None:
    record = mapped(
        address=[{"city": "Springfield"}],
        extension=[{"url": US_CORE_RACE}],
        modifierExtension=[{"url": "http://example.org/do-not-contact"}],
    )
    assert record.unmapped == [
        "address",
        f"extension('{US_CORE_RACE}')",
        "modifierExtension('http://example.org/do-not-contact')",
    ]


# Labels and robustness


def test_security_labels_are_all_kept_also_from_contained_resources() -> None:
    record = mapped(
        meta={"security": [{"system": CONFIDENTIALITY, "code": "R", "display": "restricted"}]},
        contained=[
            {"resourceType": "Organization", "id": "o", "meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]}}
        ],
    )
    assert record.security == [
        SecurityLabel(system=ACT_CODE, code="PSY"),
        SecurityLabel(system=CONFIDENTIALITY, code="R", display="restricted"),
    ]
    assert deleted_record(record, ctx("2")).security == record.security


LABEL_CODES = ["R", "V", "N", "ETH", "PSY", "PSYTHPN", "SUD", "42CFRPart2", "HIV"]
# Labels as EHRs send them: well-formed Codings, Codings missing parts, and bare codes where a Coding belongs.
labels = st.one_of(
    st.fixed_dictionaries(
        {"code": st.one_of(st.sampled_from(LABEL_CODES), st.text(max_size=12))},
        optional={
            "system": st.one_of(st.sampled_from([CONFIDENTIALITY, ACT_CODE, ""]), st.text(max_size=20)),
            "display": st.text(max_size=20),
        },
    ),
    st.sampled_from(LABEL_CODES),
)


def label_key(label: dict[str, str] | str) -> tuple[str | None, str]:
    if isinstance(label, str):
        return None, label
    system, code = label.get("system", ""), label["code"]
    return (system if system.strip() else None), (code if code.strip() else "")


@settings(max_examples=200, deadline=None)
@given(own=st.lists(labels, max_size=6), contained=st.lists(labels, max_size=3))
def test_generated_patients_keep_every_security_label(
    own: list[dict[str, str] | str], contained: list[dict[str, str] | str]
) -> None:
    resource = patient(
        meta={"versionId": "3", "security": own},
        contained=[{"resourceType": "RelatedPerson", "id": "rp", "meta": {"security": contained}}],
    )
    record = to_platform(resource, ctx())
    kept = {(label.system, label.code) for label in record.security}
    assert {label_key(label) for label in own + contained} <= kept
    assert len(kept) == len(record.security), "each label once"
    stored = Patient.model_validate_json(record.model_dump_json())
    assert deleted_record(stored, ctx("4")).security == record.security


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "Patient",
            "id": "odd",
            "active": "no",
            "identifier": {"system": 5, "value": "lonely", "type": "MR"},
            "name": ["Ana", {"given": "Ana", "family": ["x"]}],
            "telecom": {"system": "phone", "value": "555-0102", "rank": True},
            "gender": ["female"],
            "birthDate": None,
            "communication": [{"language": "es"}, None],
            "link": [{"type": "replaced-by"}, {"type": "replaced-by", "other": "Patient/x"}],
            "generalPractitioner": "Practitioner/1",
            "meta": {"security": "R"},
        },
        ctx(),
    )
    assert record.identifiers[0].value == "lonely" and record.mrn is None
    assert record.name is not None and record.name.text == "Ana"
    assert record.telecom == [ContactPoint(system="phone", value="555-0102")]
    assert (record.gender, record.birth_date, record.preferred_language, record.merged_into) == (None, None, None, None)
    assert record.general_practitioners == []
    assert record.security == [SecurityLabel(system=None, code="R")]


@pytest.mark.parametrize(
    "resource", [{"resourceType": "Practitioner", "id": "p1"}, {"id": "x"}, [], "Patient", {"resourceType": "Patient"}]
)
def test_input_that_is_not_a_patient_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


def test_the_mapper_does_not_modify_its_input() -> None:
    resource = patient(link=[{"other": {"reference": "Patient/b"}, "type": "replaced-by"}])
    original = copy.deepcopy(resource)
    to_platform(resource, ctx())
    assert resource == original


# Change events


MERGE: dict[str, Any] = {"link": [{"other": {"reference": "Patient/survivor"}, "type": "replaced-by"}], "active": False}


def test_classify_first_version_is_created() -> None:
    assert classify(None, mapped()) == ["patient.created"]


def test_classify_a_new_phone_number_is_updated() -> None:
    assert classify(mapped(), mapped("2", telecom=[{"system": "phone", "value": "555-0177"}])) == ["patient.updated"]


def test_classify_a_replaced_by_link_is_merged_and_its_deactivation_is_part_of_it() -> None:
    assert classify(mapped(), mapped("2", **MERGE)) == ["patient.merged"]


def test_classify_a_merge_with_other_changes_is_merged_then_updated() -> None:
    assert classify(mapped(), mapped("2", **MERGE, gender="other")) == ["patient.merged", "patient.updated"]


def test_classify_a_merge_into_another_survivor_is_merged_again() -> None:
    moved = {**MERGE, "link": [{"other": {"reference": "Patient/final"}, "type": "replaced-by"}]}
    assert classify(mapped(**MERGE), mapped("2", **moved)) == ["patient.merged"]
    assert classify(mapped(**MERGE), mapped("2", **MERGE)) == []


def test_classify_an_undone_merge_is_updated() -> None:
    assert classify(mapped(**MERGE), mapped("2")) == ["patient.updated"]


def test_classify_a_patient_first_seen_merged_is_created_and_merged() -> None:
    assert classify(None, mapped(**MERGE)) == ["patient.created", "patient.merged"]


def test_classify_deleted_and_recreated() -> None:
    previous = mapped()
    tombstone = deleted_record(previous, ctx("2"))
    assert tombstone.deleted and tombstone.source.fhir_url == "Patient/pat-1/_history/2"
    assert tombstone.name == previous.name
    assert classify(previous, tombstone) == ["patient.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("3")) == ["patient.created"]


def test_deleting_another_tenants_patient_raises() -> None:
    with pytest.raises(MappingError):
        deleted_record(mapped(), ctx("2", tenant="clinic-b"))


def test_classify_a_new_version_with_nothing_visible_changed_is_none() -> None:
    new_version = to_platform(patient(), ctx("2", ehr_version_id="9", ehr_last_updated="2024-01-02T11:59:00Z"))
    assert new_version.source != mapped().source
    assert classify(mapped(), new_version) == []
    # An element the record does not carry (an address) changes nothing the platform sees.
    moved_house = mapped("2", address=[{"city": "Springfield"}])
    assert classify(mapped(address=[{"city": "Shelbyville"}]), moved_house) == []


def test_registry_serves_patients_with_their_status() -> None:
    family = MAPPED["Patient"]
    assert (family.record_type, family.route) == ("patient", "patients")
    record = family.to_platform(patient(), ctx())
    assert family.index_fields(record) == {"patient": "Patient/pat-1", "sort": None, "status": "active"}
    assert index_fields(mapped(active=False))["status"] == "inactive"
    assert index_fields(mapped(**MERGE))["status"] == "merged"
    assert family.model.model_validate_json(record.model_dump_json()) == record


# The corpus


def with_id(resource: dict[str, Any]) -> dict[str, Any]:
    """Return the resource as the gateway maps it: an entry posted without an id gets one assigned first."""
    return resource if resource.get("id") else {**resource, "id": "assigned-by-gateway"}


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("Patient"))
def test_every_corpus_patient_maps(resource: dict[str, Any]) -> None:
    original = copy.deepcopy(resource)
    if not resource.get("id"):
        with pytest.raises(MissingId):
            to_platform(resource, ctx())
    record = to_platform(with_id(resource), ctx())
    assert resource == original, "the mapper must not modify its input"
    assert record.id == with_id(resource)["id"]
    assert record.name is None or record.name.text.strip()
    assert Patient.model_validate_json(record.model_dump_json()) == record
    assert classify(None, record) == ["patient.created"] + (["patient.merged"] if record.merged_into else [])
    assert classify(record, to_platform(with_id(resource), ctx("2"))) == []
