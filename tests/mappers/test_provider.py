"""The Practitioner and PractitionerRole mappers: who the clinician is, their NPI, roles, places and events."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mappers.errors import MappingError, MissingId
from mappers.family import tombstone as deleted_record
from mappers.model import CodeableText, Coding, Ref, SecurityLabel
from mappers.person import ContactPoint
from mappers.provider import (
    Provider,
    ProviderRole,
    classify,
    classify_role,
    index_fields,
    role_to_platform,
    to_platform,
)
from mappers.registry import MAPPED, record_routes
from tests.mappers.conftest import corpus_file, corpus_params, ctx
from tests.mappers.test_patient import with_id

NPI = "http://hl7.org/fhir/sid/us-npi"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def practitioner(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": "dr-1",
        "identifier": [{"system": NPI, "value": "1234567893"}],
        "name": [{"family": "Okafor", "given": ["Chidi"], "prefix": ["Dr"]}],
        "telecom": [{"system": "phone", "value": "555-0150", "use": "work"}],
    }
    return resource | elements


def role(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": "dr-1",
        "practitioner": {"reference": "Practitioner/dr-1", "display": "Dr Chidi Okafor"},
        "organization": {"reference": "Organization/clinic"},
        "code": [{"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "103T00000X"}]}],
        "specialty": [{"text": "Psychology"}],
        "location": [{"reference": "Location/main", "display": "Main St office"}],
    }
    return resource | elements


def mapped(version: str = "1", **elements: Any) -> Provider:
    return to_platform(practitioner(**elements), ctx(version))


def mapped_role(version: str = "1", **elements: Any) -> ProviderRole:
    return role_to_platform(role(**elements), ctx(version))


# Practitioner


def test_us_core_practitioner_maps_name_npi_and_other_identifiers() -> None:
    record = to_platform(corpus_file("us-core-examples/practitioner-1.json"), ctx())
    assert record.id == "practitioner-1"
    assert record.name is not None and record.name.text == "Dr Ronald Bone"
    assert record.npi == "9941339100"
    assert [(i.kind, i.value) for i in record.identifiers] == [("npi", "9941339100"), (None, "25456")]
    assert record.unmapped == ["address"]


def test_hl7_practitioner_keeps_qualifications_and_telecom() -> None:
    record = to_platform(corpus_file("hl7-r4-spec-examples/Practitioner-example.json"), ctx())
    assert record.name is not None and record.name.text == "Dr Adam Careful"
    assert record.qualifications[0].text == "Bachelor of Science"
    assert record.qualifications[0].codings[0].code == "BS"
    assert record.npi is None


def test_npi_is_recognised_by_system_or_v2_type_code() -> None:
    typed = {"type": {"coding": [{"system": V2_0203, "code": "NPI"}]}, "system": "urn:local", "value": "55"}
    assert mapped(identifier=[{"system": "urn:staff", "value": "9"}, typed]).npi == "55"
    # The NPI system is definitive even under a type code that says something else.
    mistyped = {"type": {"coding": [{"system": V2_0203, "code": "TAX"}]}, "system": NPI, "value": "77"}
    assert mapped(identifier=[mistyped]).npi == "77"


def test_the_current_npi_wins_over_an_old_one() -> None:
    identifiers = [{"system": NPI, "value": "111", "use": "old"}, {"system": NPI, "value": "222"}]
    assert mapped(identifier=identifiers).npi == "222"


def test_an_epic_provider_identifier_is_not_taken_for_an_mrn() -> None:
    epic_ser = {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.697780", "value": "E1000"}
    record = to_platform(
        practitioner(identifier=[epic_ser, {"system": NPI, "value": "1234567893"}]), ctx(vendor="epic")
    )
    assert [i.kind for i in record.identifiers] == [None, "npi"]
    assert record.npi == "1234567893"


def test_practitioner_fields_active_gender_and_telecom() -> None:
    record = mapped(
        active=False, gender="FEMALE", telecom=[{"system": "email", "value": "c@example.org"}, {"use": "work"}]
    )
    assert (record.active, record.gender) == (False, "female")
    assert record.telecom == [ContactPoint(system="email", value="c@example.org")]
    assert mapped().active is True


# PractitionerRole


def test_hl7_practitioner_role_maps_its_people_places_roles_and_specialties() -> None:
    record = role_to_platform(corpus_file("hl7-r4-spec-examples/PractitionerRole-example.json"), ctx())
    assert record.record_type == "provider_role"
    assert record.practitioner == Ref(reference="Practitioner/example", display="Dr Adam Careful")
    assert record.organization == Ref(reference="Organization/f001")
    assert record.locations == [Ref(reference="Location/1", display="South Wing, second floor")]
    assert record.healthcare_services == [Ref(reference="HealthcareService/example")]
    assert record.roles[0].codings[0].code == "RP"
    assert record.specialties == [
        CodeableText(
            codings=[Coding(system="http://snomed.info/sct", code="408443003", display="General medical practice")]
        )
    ]
    assert [t.system for t in record.telecom] == ["phone", "email"]
    assert "availableTime" in record.unmapped


def test_role_npi_and_inactive_role() -> None:
    record = mapped_role(identifier=[{"system": NPI, "value": "1234567893"}], active=False)
    assert (record.npi, record.active) == ("1234567893", False)
    assert index_fields(record) == {"patient": None, "sort": None, "status": "inactive"}


def test_a_practitioner_and_a_role_with_one_id_are_different_records() -> None:
    person, job = mapped(), mapped_role()
    assert person.id == job.id == "dr-1"
    assert (person.record_type, job.record_type) == ("provider", "provider_role")
    assert (person.source.fhir_type, job.source.fhir_type) == ("Practitioner", "PractitionerRole")
    routes = record_routes()
    assert routes["providers"] == ("provider", Provider)
    assert routes["provider-roles"] == ("provider_role", ProviderRole)
    assert MAPPED["Practitioner"].record_type != MAPPED["PractitionerRole"].record_type


# Labels and robustness


def test_security_labels_are_kept_on_providers_and_roles() -> None:
    meta = {"security": [{"system": ACT_CODE, "code": "PSY"}, "R"]}
    expected = [SecurityLabel(system=None, code="R"), SecurityLabel(system=ACT_CODE, code="PSY")]
    assert mapped(meta=meta).security == expected
    assert mapped_role(meta=meta).security == expected
    assert deleted_record(mapped_role(meta=meta), ctx("2")).security == expected


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "Practitioner",
            "id": "odd",
            "identifier": "1234567893",
            "name": {"text": "  Dr. Who  "},
            "qualification": [{"code": "MD"}, {"code": {"text": "MD"}}, None],
            "gender": 0,
        },
        ctx(),
    )
    assert record.name is not None and record.name.text == "Dr. Who"
    assert record.qualifications == [CodeableText(text="MD")]
    assert (record.identifiers, record.gender) == ([], None)
    odd_role = role_to_platform(
        {
            "resourceType": "PractitionerRole",
            "id": "r",
            "practitioner": "Practitioner/1",
            "location": [{}],
            "code": "x",
        },
        ctx(),
    )
    assert (odd_role.practitioner, odd_role.locations, odd_role.roles) == (None, [], [])


@pytest.mark.parametrize(
    "resource", [{"resourceType": "PractitionerRole", "id": "r"}, {"resourceType": "Practitioner"}]
)
def test_input_that_is_not_a_practitioner_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


@pytest.mark.parametrize(
    "resource", [{"resourceType": "Practitioner", "id": "p"}, {"resourceType": "PractitionerRole"}]
)
def test_input_that_is_not_a_practitioner_role_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        role_to_platform(resource, ctx())


# Change events


def test_classify_provider_lifecycle() -> None:
    first = mapped()
    assert classify(None, first) == ["provider.created"]
    assert classify(first, mapped("2", name=[{"family": "Okafor-Ruiz", "given": ["Chidi"]}])) == ["provider.updated"]
    assert classify(first, to_platform(practitioner(), ctx("2", ehr_version_id="8"))) == []
    tombstone = deleted_record(first, ctx("3"))
    assert tombstone.deleted and tombstone.source.fhir_url == "Practitioner/dr-1/_history/3"
    assert classify(first, tombstone) == ["provider.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("4")) == ["provider.created"]


def test_classify_provider_role_lifecycle() -> None:
    first = mapped_role()
    assert classify_role(None, first) == ["provider_role.created"]
    moved = mapped_role("2", location=[{"reference": "Location/annex"}])
    assert classify_role(first, moved) == ["provider_role.updated"]
    assert classify_role(first, mapped_role("2", availableTime=[{"allDay": True}])) == []
    tombstone = deleted_record(first, ctx("3"))
    assert tombstone.source.fhir_url == "PractitionerRole/dr-1/_history/3"
    assert classify_role(first, tombstone) == ["provider_role.deleted"]


def test_deleting_another_tenants_provider_raises() -> None:
    with pytest.raises(MappingError):
        deleted_record(mapped(), ctx("2", tenant="clinic-b"))


def test_registry_gives_the_worker_both_families() -> None:
    for fhir_type, route, resource in (
        ("Practitioner", "providers", practitioner()),
        ("PractitionerRole", "provider-roles", role()),
    ):
        family = MAPPED[fhir_type]
        assert family.route == route
        record = family.to_platform(resource, ctx())
        assert family.index_fields(record) == {"patient": None, "sort": None, "status": "active"}
        assert family.model.model_validate_json(record.model_dump_json()) == record


# The corpus


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("Practitioner"))
def test_every_corpus_practitioner_maps(resource: dict[str, Any]) -> None:
    original = copy.deepcopy(resource)
    if not resource.get("id"):
        with pytest.raises(MissingId):
            to_platform(resource, ctx())
    record = to_platform(with_id(resource), ctx())
    assert resource == original, "the mapper must not modify its input"
    assert all(i.kind != "mrn" for i in record.identifiers)
    assert Provider.model_validate_json(record.model_dump_json()) == record
    assert classify(None, record) == ["provider.created"]
    assert classify(record, to_platform(with_id(resource), ctx("2"))) == []


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("PractitionerRole"))
def test_every_corpus_practitioner_role_maps(resource: dict[str, Any]) -> None:
    original = copy.deepcopy(resource)
    if not resource.get("id"):
        with pytest.raises(MissingId):
            role_to_platform(resource, ctx())
    record = role_to_platform(with_id(resource), ctx())
    assert resource == original, "the mapper must not modify its input"
    assert ProviderRole.model_validate_json(record.model_dump_json()) == record
    assert classify_role(None, record) == ["provider_role.created"]
    assert classify_role(record, role_to_platform(with_id(resource), ctx("2"))) == []
