"""Profiles given as support, applied to the resources that claim them (or that the caller names)."""

from __future__ import annotations

from typing import Any

from conformance.outcome import Issue
from conformance.validator import Support, validate_resource

URL = "http://example.org/StructureDefinition/strict-patient"
PROFILE: dict[str, Any] = {
    "resourceType": "StructureDefinition",
    "url": URL,
    "type": "Patient",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "derivation": "constraint",
    "differential": {
        "element": [
            {"id": "Patient.name", "path": "Patient.name", "min": 1},
            {"id": "Patient.photo", "path": "Patient.photo", "max": "0"},
            {"id": "Patient.gender", "path": "Patient.gender", "fixedCode": "female"},
            {
                "id": "Patient.address",
                "path": "Patient.address",
                "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
            },
            {
                "id": "Patient.address:home",
                "path": "Patient.address",
                "sliceName": "home",
                "max": "1",
                "patternAddress": {"use": "home"},
            },
            {"id": "Patient.address:home.city", "path": "Patient.address.city", "min": 1},
        ]
    },
}


def failing(resource: dict[str, Any], **options: Any) -> list[Issue]:
    issues = validate_resource(resource, support=Support([PROFILE]), **options)
    return [i for i in issues if i.severity in ("error", "fatal")]


def patient(**changes: Any) -> dict[str, Any]:
    resource = {"resourceType": "Patient", "meta": {"profile": [URL]}, "name": [{"family": "Doe"}], "gender": "female"}
    resource.update(changes)
    return resource


def test_a_resource_that_meets_its_profile_passes() -> None:
    assert failing(patient(address=[{"use": "home", "city": "Springfield"}, {"use": "work"}])) == []


def test_cardinality_fixed_values_and_slices_are_checked() -> None:
    bare = patient()
    del bare["name"]
    assert "Patient.name: minimum required = 1" in failing(bare)[0].diagnostics
    assert "max allowed = 0" in failing(patient(photo=[{"url": "http://x.org/p.png"}]))[0].diagnostics
    assert "fixes" in failing(patient(gender="male"))[0].diagnostics
    two_homes = patient(address=[{"use": "home", "city": "A"}, {"use": "home", "city": "B"}])
    assert "Patient.address:home: max allowed = 1" in failing(two_homes)[0].diagnostics
    no_city = patient(address=[{"use": "home"}, {"use": "work"}])
    assert [i.expression for i in failing(no_city)] == ["Patient.address[0]"]


def test_a_profile_named_by_the_caller_or_made_global_applies_too() -> None:
    plain = {"resourceType": "Patient", "gender": "male"}
    assert failing(plain) == []
    assert len(failing(plain, profiles=[URL])) == 2
    guide = {"resourceType": "ImplementationGuide", "global": [{"type": "Patient", "profile": URL}]}
    issues = validate_resource(plain, support=Support([PROFILE, guide]))
    assert len([i for i in issues if i.severity == "error"]) == 2


def test_a_profile_that_cannot_be_found_is_a_warning() -> None:
    issues = validate_resource({"resourceType": "Patient"}, profiles=["http://example.org/unknown"])
    assert [(i.severity, i.code) for i in issues] == [("warning", "not-found")]
