"""R4's invariants: every one of severity error is compiled from its FHIRPath or handled by hand, and each one the
gateway missed before is now an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance import fhirpath
from conformance.r4_invariants import COMPILED, NOT_COMPILED
from conformance.validator import validate_resource
from tests.conformance.test_validator import CORPUS, CORPUS_FOLDERS
from tests.conformance.typed_json import typed_objects

CONFORMANCE = Path(__file__).resolve().parents[2] / "conformance"
UCUM = "http://unitsofmeasure.org"
# The R4 (4.0.1) invariants of severity error: 207 in the definitions (ele-1 and ext-1 once each, at Element and
# Extension), as tools/generate_r4_tables.py reads them.
R4_ERROR_INVARIANTS = 207


def test_every_r4_invariant_is_compiled_or_listed_with_what_handles_it() -> None:
    assert len(COMPILED) + len(NOT_COMPILED) == R4_ERROR_INVARIANTS
    handled_by_hand = [row for row in NOT_COMPILED if row[3].startswith(("conformance/", "the walk"))]
    unhandled = {
        key: reason
        for _path, key, _expression, reason in NOT_COMPILED
        if (_path, key, _expression, reason) not in handled_by_hand
    }
    assert unhandled == {
        "ctm-1": "not compiled: the function resolve()",
        "mqty-1": "MoneyQuantity is the type of no R4 element",
    }
    sources = "\n".join(path.read_text(encoding="utf-8") for path in CONFORMANCE.glob("*.py"))
    for _path, key, _expression, reason in handled_by_hand:
        assert key in sources, f"{key}: {reason}"


MISSED_BEFORE = (
    "obs-3 obs-6 obs-7 con-1 con-4 con-5 ait-1 ait-2 org-1 org-2 org-3 gol-1 prr-1 cmp-1 cmp-2 imm-1 inv-1 apr-1 "
    "fhs-2 msq-3 age-1 rng-2 sqty-1"
)


@pytest.mark.parametrize("key", MISSED_BEFORE.split(" "))
def test_the_invariants_missed_before_are_compiled(key: str) -> None:
    assert key in {row[2] for row in COMPILED}


SUBJECT = {"reference": "Patient/p1"}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


# The elements each resource type used below requires, so that a test resource is otherwise valid.
BASES: dict[str, dict[str, Any]] = {
    "Observation": {"status": "final", "code": {"text": "weight"}},
    "Condition": {"subject": SUBJECT},
    "AllergyIntolerance": {"patient": SUBJECT},
    "Organization": {"name": "x"},
    "Goal": {"lifecycleStatus": "active", "description": {"text": "x"}, "subject": SUBJECT},
    "ServiceRequest": {"status": "active", "intent": "order", "subject": SUBJECT},
    "Composition": {
        "status": "final",
        "type": {"text": "t"},
        "date": "2024",
        "author": [{"display": "a"}],
        "title": "t",
    },
    "Immunization": {"status": "completed", "vaccineCode": {"text": "v"}, "patient": SUBJECT, "occurrenceString": "x"},
    "Task": {"status": "ready", "intent": "order"},
    "AppointmentResponse": {"appointment": {"reference": "Appointment/a"}, "participantStatus": "accepted"},
    "FamilyMemberHistory": {"status": "completed", "patient": SUBJECT, "relationship": {"text": "mother"}},
    "MolecularSequence": {"coordinateSystem": 0},
}


def make(resource_type: str, **changes: Any) -> dict[str, Any]:
    """Return a valid resource of the type with the given elements set (None removes one)."""
    resource = {"resourceType": resource_type, **BASES[resource_type], **changes}
    return {key: value for key, value in resource.items() if value is not None}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _quantity(value: float, **extra: Any) -> dict[str, Any]:
    return {"value": value, "system": UCUM, "code": "a", **extra}


ACTIVE = _coded(CLINICAL, "active")
CONDITION_ERROR = _coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", "entered-in-error")
ALLERGY_ACTIVE = _coded("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active")
LOINC = _coded("http://loinc.org", "8480-6")
EMPTY_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">  </div>'
SOME_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'

# key -> (a resource that breaks it, the path of the error, the same resource mended)
VIOLATIONS: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "obs-3": (
        make("Observation", referenceRange=[{"appliesTo": [{"text": "adults"}]}]),
        "Observation.referenceRange[0]",
        make("Observation", referenceRange=[{"text": "normal"}]),
    ),
    "obs-6": (
        make("Observation", valueString="x", dataAbsentReason={"text": "lost"}),
        "Observation",
        make("Observation", valueString="x"),
    ),
    "obs-7": (
        make("Observation", code=LOINC, valueString="x", component=[{"code": LOINC}]),
        "Observation",
        make("Observation", code=LOINC, valueString="x", component=[{"code": {"text": "other"}}]),
    ),
    "con-1": (
        make("Condition", stage=[{"type": {"text": "clinical"}}]),
        "Condition.stage[0]",
        make("Condition", stage=[{"summary": {"text": "stage II"}}]),
    ),
    "con-4": (
        make("Condition", clinicalStatus=ACTIVE, abatementDateTime="2024-01-01"),
        "Condition",
        make("Condition", clinicalStatus=_coded(CLINICAL, "resolved"), abatementDateTime="2024-01-01"),
    ),
    "con-5": (
        make("Condition", clinicalStatus=ACTIVE, verificationStatus=CONDITION_ERROR),
        "Condition",
        make("Condition", verificationStatus=CONDITION_ERROR),
    ),
    "ait-1": (
        make("AllergyIntolerance", verificationStatus=_coded(ALLERGY_VERIFICATION, "confirmed")),
        "AllergyIntolerance",
        make("AllergyIntolerance", verificationStatus=_coded(ALLERGY_VERIFICATION, "entered-in-error")),
    ),
    "ait-2": (
        make(
            "AllergyIntolerance",
            clinicalStatus=ALLERGY_ACTIVE,
            verificationStatus=_coded(ALLERGY_VERIFICATION, "entered-in-error"),
        ),
        "AllergyIntolerance",
        make("AllergyIntolerance", verificationStatus=_coded(ALLERGY_VERIFICATION, "entered-in-error")),
    ),
    "org-1": (make("Organization", name=None, active=True), "Organization", make("Organization")),
    "org-2": (
        make("Organization", address=[{"use": "home", "city": "y"}]),
        "Organization.address[0]",
        make("Organization", address=[{"use": "work", "city": "y"}]),
    ),
    "org-3": (
        make("Organization", telecom=[{"system": "phone", "value": "1", "use": "home"}]),
        "Organization.telecom[0]",
        make("Organization", telecom=[{"system": "phone", "value": "1", "use": "work"}]),
    ),
    "gol-1": (
        make("Goal", target=[{"detailString": "less"}]),
        "Goal.target[0]",
        make("Goal", target=[{"measure": {"text": "m"}, "detailString": "less"}]),
    ),
    "prr-1": (
        make("ServiceRequest", orderDetail=[{"text": "x"}]),
        "ServiceRequest",
        make("ServiceRequest", orderDetail=[{"text": "x"}], code={"text": "c"}),
    ),
    "cmp-1": (
        make("Composition", section=[{"title": "empty"}]),
        "Composition.section[0]",
        make("Composition", section=[{"title": "s", "section": [{"entry": [{"display": "e"}]}]}]),
    ),
    "cmp-2": (
        make("Composition", section=[{"entry": [{"display": "e"}], "emptyReason": {"text": "none"}}]),
        "Composition.section[0]",
        make("Composition", section=[{"entry": [{"display": "e"}]}]),
    ),
    "imm-1": (
        make("Immunization", education=[{"publicationDate": "2024-01-01"}]),
        "Immunization.education[0]",
        make("Immunization", education=[{"documentType": "VIS"}]),
    ),
    "inv-1": (
        make("Task", authoredOn="2024-05-02T10:00:00Z", lastModified="2024-05-01T10:00:00Z"),
        "Task",
        make("Task", authoredOn="2024-05-01T10:00:00Z", lastModified="2024-05-02T10:00:00Z"),
    ),
    "apr-1": (make("AppointmentResponse"), "AppointmentResponse", make("AppointmentResponse", actor=SUBJECT)),
    "fhs-2": (
        make("FamilyMemberHistory", estimatedAge=True),
        "FamilyMemberHistory",
        make("FamilyMemberHistory", estimatedAge=True, ageAge=_quantity(60)),
    ),
    "msq-3": (make("MolecularSequence", coordinateSystem=2), "MolecularSequence", make("MolecularSequence")),
    "age-1": (
        make("Condition", onsetAge=_quantity(-3)),
        "Condition.onsetAge",
        make("Condition", onsetAge=_quantity(3)),
    ),
    "rng-2": (
        make("Condition", onsetRange={"low": _quantity(10), "high": _quantity(5)}),
        "Condition.onsetRange",
        make("Condition", onsetRange={"low": _quantity(5), "high": _quantity(10)}),
    ),
    "sqty-1": (
        make("Condition", onsetRange={"low": _quantity(5, comparator="<")}),
        "Condition.onsetRange.low",
        make("Condition", onsetRange={"low": _quantity(5)}),
    ),
    "txt-2": (
        make("Condition", text={"status": "generated", "div": EMPTY_DIV}),
        "Condition.text.div",
        make("Condition", text={"status": "generated", "div": SOME_DIV}),
    ),
}


@pytest.mark.parametrize("key", sorted(VIOLATIONS))
def test_a_broken_invariant_is_an_error_at_its_element(key: str) -> None:
    broken, path, mended = VIOLATIONS[key]
    found = [i for i in validate_resource(broken) if i.severity == "error"]
    assert [(i.code, i.expression, i.diagnostics.split(":")[0]) for i in found] == [("invariant", path, key)]
    assert [i for i in validate_resource(mended) if i.severity == "error"] == []


def test_compiled_invariants_evaluate_on_real_data_without_failing() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    by_type: dict[str, list[Any]] = {}
    for row in COMPILED:
        by_type.setdefault(row[0], []).append(row)
    evaluated: set[str] = set()
    for folder in [*CORPUS_FOLDERS, "fhir-test-cases"]:
        for path in sorted((CORPUS / folder).rglob("*.json")):
            if "expected" in path.parts or path.name == "index.json":
                continue
            document = json.loads(path.read_bytes().decode("utf-8-sig"))
            for type_key, node, _where in typed_objects(document):
                for _type, steps, key, _text, _expression, function in by_type.get(type_key, ()):
                    for item in _below(node, steps):
                        try:
                            function(item, node)
                        except fhirpath.Plural:
                            continue
                        evaluated.add(key)
    assert len(evaluated) >= 40, sorted(evaluated)


def _below(node: Any, steps: tuple[tuple[str, ...], ...]) -> list[Any]:
    level = [node]
    for names in steps:
        level = [v for item in level if type(item) is dict for name in names for v in _as_items(item.get(name))]
    return level


def _as_items(value: object) -> list[Any]:
    if value is None:
        return []
    return [v for v in value if v is not None] if type(value) is list else [value]


def test_an_element_with_only_an_id_is_an_error_but_a_primitive_s_id_is_not() -> None:
    found = [i for i in validate_resource(make("Observation", valueQuantity={"id": "q"})) if i.severity == "error"]
    assert [(i.expression, i.diagnostics[:5]) for i in found] == [("Observation.valueQuantity", "ele-1")]
    assert validate_resource(make("Observation", valueString="x", _valueString={"id": "s"})) == []
