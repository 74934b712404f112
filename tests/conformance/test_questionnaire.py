"""A QuestionnaireResponse checked against its Questionnaire (given as support, contained, or in its Bundle)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conformance.outcome import Issue
from conformance.validator import Support, validate_resource

URL = "http://example.org/Questionnaire/intake"
SD = "http://hl7.org/fhir/StructureDefinition/"


def questionnaire(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "url": URL, "status": "active", "item": list(items)}


QUESTIONNAIRE = questionnaire(
    {"linkId": "name", "type": "string", "required": True, "maxLength": 10},
    {"linkId": "smoker", "type": "boolean"},
    {
        "linkId": "packs",
        "type": "integer",
        "required": True,
        "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}],
        "extension": [{"url": SD + "minValue", "valueInteger": 1}, {"url": SD + "maxValue", "valueInteger": 5}],
    },
    {
        "linkId": "mood",
        "type": "choice",
        "answerOption": [
            {"valueCoding": {"system": "http://example.org/mood", "code": "good"}},
            {
                "valueCoding": {"system": "http://example.org/mood", "code": "none"},
                "extension": [{"url": SD + "questionnaire-optionExclusive", "valueBoolean": True}],
            },
        ],
        "repeats": True,
    },
    {"linkId": "group", "type": "group", "item": [{"linkId": "note", "type": "text"}]},
)


def response(*items: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "questionnaire": URL, "status": status}
    return resource | ({"item": list(items)} if items else {})


def answer(link_id: str, **value: Any) -> dict[str, Any]:
    return {"linkId": link_id, "answer": [value]}


def check(resource: dict[str, Any], q: dict[str, Any] = QUESTIONNAIRE) -> list[Issue]:
    return [i for i in validate_resource(resource, support=Support([q])) if i.severity in ("error", "fatal")]


def test_a_response_that_follows_its_questionnaire_passes() -> None:
    good = response(answer("name", valueString="Ann"), answer("smoker", valueBoolean=False))
    assert check(good) == []


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([answer("smoker", valueBoolean=False)], "No response found for required item 'name'"),
        ([answer("name", valueString="Ann"), answer("colour", valueString="red")], "not found in questionnaire"),
        ([answer("name", valueInteger=3)], "must be of the type String"),
        ([answer("name", valueString="Annabelle-Marie")], "longer than the allowed maximum length of 10"),
        (
            [answer("name", valueString="Ann"), answer("smoker", valueBoolean=True), answer("packs", valueInteger=9)],
            "greater than the allowed maximum",
        ),
        (
            [answer("name", valueString="Ann"), answer("smoker", valueBoolean=True)],
            "No response found for required item 'packs'",
        ),
        ([answer("name", valueString="Ann"), answer("packs", valueInteger=2)], "answered but not enabled"),
        (
            [
                answer("name", valueString="Ann"),
                answer("mood", valueCoding={"system": "http://example.org/mood", "code": "bad"}),
            ],
            "not in the set of permitted values",
        ),
        ([answer("smoker", valueBoolean=False), answer("name", valueString="Ann")], "not in the Questionnaire's order"),
        (
            [answer("name", valueString="Ann"), answer("group", valueString="x")],
            "Items of type 'group' cannot have answers",
        ),
    ],
)
def test_a_response_that_breaks_its_questionnaire_is_rejected(items: list[dict[str, Any]], expected: str) -> None:
    found = check(response(*items))
    assert any(expected in i.diagnostics for i in found), found


def test_an_exclusive_option_cannot_be_combined() -> None:
    mood = {
        "linkId": "mood",
        "answer": [
            {"valueCoding": {"system": "http://example.org/mood", "code": "good"}},
            {"valueCoding": {"system": "http://example.org/mood", "code": "none"}},
        ],
    }
    assert "exclusive" in check(response(answer("name", valueString="Ann"), mood))[0].diagnostics


def test_a_missing_required_answer_is_only_a_warning_before_completion() -> None:
    issues = validate_resource(response(status="in-progress"), support=Support([QUESTIONNAIRE]))
    assert [(i.severity, i.code) for i in issues] == [("warning", "required")]


def test_the_questionnaire_is_found_contained_or_in_the_same_bundle() -> None:
    contained = copy.deepcopy(QUESTIONNAIRE) | {"id": "q"}
    inline = response(answer("name", valueInteger=1)) | {"questionnaire": "#q", "contained": [contained]}
    assert any("type String" in i.diagnostics for i in check(inline))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1", "resource": QUESTIONNAIRE},
            {"fullUrl": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a2", "resource": response()},
        ],
    }
    found = [i for i in validate_resource(bundle) if i.severity == "error"]
    assert [i.expression for i in found] == ["Bundle.entry[1].resource"]


def test_an_unknown_questionnaire_is_a_warning() -> None:
    issues = validate_resource(response(answer("anything", valueString="x")))
    assert [(i.severity, i.code) for i in issues] == [("warning", "not-found")]


def test_a_canonical_to_a_core_resource_of_the_wrong_type_is_an_error() -> None:
    resource = response() | {"questionnaire": "http://hl7.org/fhir/ValueSet/example-extensional"}
    assert [i.expression for i in validate_resource(resource) if i.severity == "error"] == [
        "QuestionnaireResponse.questionnaire"
    ]


def test_quantities_compare_in_ucum() -> None:
    item = {
        "linkId": "distance",
        "type": "quantity",
        "extension": [
            {
                "url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-maxQuantity",
                "valueQuantity": {"value": 5, "system": "http://unitsofmeasure.org", "code": "km"},
            }
        ],
    }
    ucum = {"system": "http://unitsofmeasure.org"}
    near = response(answer("distance", valueQuantity={"value": 4000, "code": "m", **ucum}))
    far = response(answer("distance", valueQuantity={"value": 6000, "code": "m", **ucum}))
    assert check(near, questionnaire(item)) == []
    assert "greater than the allowed maximum" in check(far, questionnaire(item))[0].diagnostics
