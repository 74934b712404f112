"""Rules beyond structure: invariants, references, narratives, extensions and Bundles."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from conformance.outcome import Issue
from conformance.validator import validate_resource
from tests.conformance.test_validator import SECRET, appointment, errors

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def codes(resource: object) -> list[tuple[str, str | None]]:
    return [(i.code, i.expression) for i in errors(resource)]


def texts(issues: list[Issue]) -> str:
    return " | ".join(i.diagnostics for i in issues)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"end": None}, "app-2"),
        ({"start": None, "end": None}, "app-3"),
        ({"cancelationReason": {"text": "ill"}}, "app-4"),
    ],
)
def test_appointment_invariants(changes: dict[str, Any], rule: str) -> None:
    resource = appointment(**{k: v for k, v in changes.items() if v is not None})
    for key, value in changes.items():
        if value is None:
            del resource[key]
    found = errors(resource)
    assert {i.code for i in found} == {"invariant"} and found[0].diagnostics.startswith(rule)


def test_a_participant_needs_a_type_or_an_actor() -> None:
    resource = appointment()
    del resource["participant"][1]["actor"]
    assert codes(resource) == [("invariant", "Appointment.participant[1]")]


def test_questionnaire_item_invariants() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {"linkId": "g", "type": "group"},
            {"linkId": "d", "type": "display", "required": True},
            {
                "linkId": "q",
                "type": "string",
                "enableWhen": [
                    {"question": "g", "operator": "exists", "answerBoolean": True},
                    {"question": "d", "operator": "exists", "answerBoolean": True},
                ],
            },
            {"linkId": "q", "type": "boolean", "answerValueSet": "http://example.org/vs"},
        ],
    }
    found = texts(errors(questionnaire))
    for rule in ("que-1", "que-6", "que-12", "que-2", "que-5"):
        assert rule in found


def test_a_reference_must_name_a_target_type_the_element_allows() -> None:
    resource = appointment()
    resource["participant"][0]["actor"]["reference"] = "Group/1"
    assert codes(resource) == [("structure", "Appointment.participant[0].actor.reference")]
    resource["participant"][0]["actor"] = {
        "reference": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1",
        "type": "patient",
    }
    assert codes(resource) == [("structure", "Appointment.participant[0].actor.type")]
    resource["participant"][0]["actor"] = {"reference": "just-an-id"}
    assert codes(resource) == [("invalid", "Appointment.participant[0].actor.reference")]


def test_contained_resources_must_be_referred_to_and_fragments_must_resolve() -> None:
    unreferenced = appointment(contained=[{"resourceType": "Patient", "id": "p1"}])
    assert [d[:5] for d in texts(errors(unreferenced)).split(" | ")] == ["dom-3"]
    dangling = appointment()
    dangling["participant"][0]["actor"]["reference"] = "#nowhere"
    assert texts(errors(dangling)).startswith("ref-1")
    nested = appointment(contained=[{"resourceType": "Patient", "id": "p1", "contained": [{"resourceType": "Basic"}]}])
    nested["participant"][0]["actor"]["reference"] = "#p1"
    assert "dom-2" in texts(errors(nested))


@pytest.mark.parametrize(
    "div",
    [
        f"<div {XHTML}><script>alert(1)</script></div>",
        f'<div {XHTML}><p onclick="steal()">x</p></div>',
        f'<div {XHTML}><a href="javascript:steal()">x</a></div>',
        f"<div {XHTML}>&reg;</div>",
        f"<div {XHTML}><p>unclosed</div>",
        "<div>no namespace</div>",
        f'<div {XHTML}><a href="#nowhere">x</a></div>',
    ],
)
def test_unsafe_or_malformed_narratives_are_errors(div: str) -> None:
    resource = appointment(text={"status": "generated", "div": div})
    assert codes(resource) == [("invalid", "Appointment.text.div")]


def test_safe_narratives_pass() -> None:
    div = (
        f'<div {XHTML}><p>Plain &amp; <b>bold</b> &#169;</p><a name="top"></a><a href="#top">up</a>'
        '<table><tr><td style="color: red">1</td></tr></table><img src="x.png" alt="x"/><!-- note --></div>'
    )
    assert errors(appointment(text={"status": "generated", "div": div})) == []


def test_extensions_that_cannot_be_resolved_are_warnings_and_core_ones_are_typed() -> None:
    unknown = appointment(extension=[{"url": "http://ehr.example/x", "valueString": "y"}])
    assert [(i.severity, i.code) for i in validate_resource(unknown)] == [("warning", "extension")]
    wrong = appointment(extension=[{"url": "http://hl7.org/fhir/StructureDefinition/narrativeLink", "valueUri": "#x"}])
    assert codes(wrong) == [("structure", "Appointment.extension[0]")]
    both = appointment(extension=[{"url": "http://ehr.example/x", "valueString": "y", "extension": [{"url": "a"}]}])
    assert "ext-1" in texts(errors(both))
    versioned = appointment(extension=[{"url": "http://hl7.org/fhir/StructureDefinition/narrativeLink|4.0.0"}])
    assert ("invalid", "Appointment.extension[0].url") in codes(versioned)


def test_codings_name_code_systems_by_absolute_uri() -> None:
    for system in ("Location!", "http://hl7.org/fhir/ValueSet/measure-type"):
        resource = appointment(serviceType=[{"coding": [{"system": system, "code": "x"}]}])
        assert codes(resource) == [("invalid", "Appointment.serviceType[0].coding[0].system")]


def test_primitive_forms() -> None:
    assert codes(appointment(created="2023-02-29")) == [("value", "Appointment.created")]
    assert codes(appointment(created="2024-02-29")) == []
    assert codes(appointment(id="bad_id")) == [("value", "Appointment.id")]
    attachment = {"contentType": "text/plain", "data": "not base64!"}
    assert codes(appointment(extension=[{"url": "http://e.org/a", "valueAttachment": attachment}])) == [
        ("value", "Appointment.extension[0].valueAttachment.data")
    ]
    assert codes(appointment(meta={"source": "urn:uuid:NOT-A-UUID"})) == [("value", "Appointment.meta.source")]


def test_fhir_comments_are_unknown_in_r4() -> None:
    assert codes(appointment(fhir_comments=["a comment"])) == [("structure", "Appointment.fhir_comments")]


def bundle(kind: str, *entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries), **extra}


PATIENT = {"resourceType": "Patient", "id": "p1"}


def test_bundle_invariants_and_full_urls() -> None:
    document = bundle("document", {"fullUrl": "Patient/p1", "resource": PATIENT})
    found = errors(document)
    for rule in ("bdl-9", "bdl-10", "bdl-11"):
        assert rule in texts(found)
    assert ("invalid", "Bundle.entry[0].fullUrl") in [(i.code, i.expression) for i in found]
    transaction = bundle(
        "transaction", {"fullUrl": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1", "resource": PATIENT}
    )
    assert "bdl-3" in texts(errors(transaction))
    collection = bundle("collection", {"resource": PATIENT}, total=1)
    assert "bdl-1" in texts(errors(collection))


def test_search_sets() -> None:
    links = [{"relation": "self", "url": "http://x.org/fhir/Patient?name=a"}] * 2
    entries = [
        {"fullUrl": "http://x.org/fhir/Observation/1", "resource": {"resourceType": "Basic", "code": {"text": "x"}}},
        {
            "fullUrl": "http://x.org/fhir/Patient/2",
            "resource": {"resourceType": "Patient"},
            "search": {"mode": "match"},
        },
    ]
    entries[0]["search"] = {"mode": "outcome"}
    found = texts(errors(bundle("searchset", *entries, link=links)))
    for text in ("can only occur once", "must be an OperationOutcome", "must have ids"):
        assert text in found
    wrong_type = [
        {
            "fullUrl": "http://x.org/fhir/Basic/3",
            "resource": {"resourceType": "Basic", "id": "3", "code": {"text": "x"}},
            "search": {"mode": "match"},
        }
    ]
    assert "not a resource type the search was for" in texts(errors(bundle("searchset", *wrong_type, link=links[:1])))


def test_references_between_entries_resolve_by_full_url() -> None:
    def observation(version: str) -> dict[str, Any]:
        return {
            "fullUrl": "http://x.org/fhir/Observation/o1",
            "resource": {
                "resourceType": "Observation",
                "id": "o1",
                "meta": {"versionId": version},
                "status": "final",
                "code": {"text": "x"},
            },
        }

    composition = {
        "fullUrl": "http://x.org/fhir/Composition/c1",
        "resource": {
            "resourceType": "Composition",
            "id": "c1",
            "status": "final",
            "type": {"text": "x"},
            "date": "2024-01-01",
            "author": [{"display": "x"}],
            "title": "x",
            "section": [{"entry": [{"reference": "Observation/o1/_history/1"}]}],
        },
    }
    document = bundle(
        "document",
        composition,
        observation("1"),
        observation("2"),
        identifier={"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1"},
        timestamp="2024-01-01T00:00:00Z",
    )
    assert errors(document) == []
    missing = copy.deepcopy(document)
    missing["entry"][0]["resource"]["section"][0]["entry"][0]["reference"] = "Observation/o1/_history/3"
    assert codes(missing) == [("invalid", "Bundle.entry[0].resource.section[0].entry[0].reference")]
    ambiguous = copy.deepcopy(document)
    ambiguous["entry"][0]["resource"]["section"][0]["entry"][0]["reference"] = "Observation/o1"
    assert "Found 2 matches" in texts(errors(ambiguous))


def test_new_diagnostics_never_carry_the_offending_values() -> None:
    resource = appointment(
        text={"status": "generated", "div": f"<div {XHTML}><{SECRET}>x</{SECRET}><p {SECRET}='1'>&{SECRET};</p></div>"},
        extension=[{"url": f"http://hl7.org/fhir/StructureDefinition/narrativeLink|{SECRET}"}],
        serviceType=[{"coding": [{"system": SECRET, "code": SECRET}]}],
    )
    resource["participant"][0]["actor"]["reference"] = f"{SECRET}/{SECRET}"
    issues = validate_resource(resource)
    assert len(errors(resource)) >= 4
    assert SECRET not in json.dumps([i.diagnostics for i in issues])


def test_a_reversed_period_and_a_unit_code_without_a_system_are_errors() -> None:
    reversed_period = appointment(requestedPeriod=[{"start": "2024-05-02", "end": "2024-05-01"}])
    assert codes(reversed_period) == [("invariant", "Appointment.requestedPeriod[0]")]
    duration = {"value": 30, "code": "min"}
    timing = {"repeat": {"boundsDuration": duration}}
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "occurrenceTiming": timing,
    }
    found = errors(request)
    assert [(i.code, i.expression) for i in found] == [
        ("invariant", "ServiceRequest.occurrenceTiming.repeat.boundsDuration")
    ]
    assert found[0].diagnostics.startswith("qty-3")


def test_a_restful_full_url_must_name_its_resource_and_urn_references_must_resolve_in_a_transaction() -> None:
    entry = {"fullUrl": "http://x.org/fhir/Patient/p2", "resource": PATIENT}
    assert codes(bundle("collection", entry)) == [("invalid", "Bundle.entry[0].fullUrl")]
    assert codes(bundle("collection", dict(entry, fullUrl="http://x.org/fhir/Patient/p1"))) == []
    patient_url = "urn:uuid:0b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1"
    booked = appointment()
    booked["participant"][0]["actor"]["reference"] = patient_url
    entries = [
        {"fullUrl": patient_url, "resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
        {"resource": booked, "request": {"method": "POST", "url": "Appointment"}},
    ]
    assert codes(bundle("transaction", *entries)) == []
    dangling = copy.deepcopy(entries)
    dangling[0]["fullUrl"] = "urn:uuid:1b7e8e30-42f4-4b37-9c2b-c3c7b4a7f8a1"
    assert codes(bundle("transaction", *dangling)) == [
        ("not-found", "Bundle.entry[1].resource.participant[0].actor.reference")
    ]


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def condition(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}]},
        "subject": {"reference": "Patient/p1"},
    }
    resource.update(changes)
    return resource


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"clinicalStatus": {"coding": [{"system": CLINICAL, "code": "current"}]}},
            "Condition.clinicalStatus.coding[0].code",
        ),
        ({"clinicalStatus": {"text": "active"}}, "Condition.clinicalStatus"),
        (
            {"clinicalStatus": {"coding": [{"system": "http://snomed.info/sct", "code": "55561003"}]}},
            "Condition.clinicalStatus",
        ),
        (
            {"verificationStatus": {"coding": [{"system": VERIFICATION, "code": "yes"}]}},
            "Condition.verificationStatus.coding[0].code",
        ),
        ({"verificationStatus": {"coding": [{"code": "confirmed"}]}}, "Condition.verificationStatus"),
    ],
)
def test_a_required_binding_on_a_codeable_concept_needs_a_valid_coding_from_its_value_set(
    changes: dict[str, Any], expected: str
) -> None:
    assert errors(condition()) == []
    assert [(i.code, i.expression) for i in errors(condition(**changes))] == [("code-invalid", expected)]


def test_an_allergy_status_coded_only_in_snomed_is_an_error() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"system": "http://snomed.info/sct", "code": "55561003"}]},
        "patient": {"reference": "Patient/p1"},
    }
    assert codes(allergy) == [("code-invalid", "AllergyIntolerance.clinicalStatus")]
    allergy["clinicalStatus"]["coding"].append(
        {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
    )
    assert codes(allergy) == []


def test_a_code_outside_an_hl7_code_system_is_a_warning_where_the_binding_is_not_required() -> None:
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": category, "code": "vital-sign"}]}],
        "code": {"text": "weight"},
    }
    issues = validate_resource(observation)
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("warning", "code-invalid", "Observation.category[0].coding[0].code")
    ]
    observation["category"][0]["coding"][0]["code"] = "vital-signs"
    assert validate_resource(observation) == []
    coded = appointment(
        meta={"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NOPE"}]}
    )
    assert [(i.severity, i.expression) for i in validate_resource(coded)] == [
        ("warning", "Appointment.meta.security[0].code")
    ]
