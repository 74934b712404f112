"""The faster walk (issue #13) gives the same verdicts as the walk before it, issue for issue.

``before`` loads the validator as it was at ``before.BEFORE`` from git, with its own tables and rules; every
document here is validated by both and the complete OperationOutcomes (severities, codes, paths, texts, order)
must be equal: every JSON file of the corpus, HL7's validator test cases with their supporting files, and
hypothesis mutations of valid resources (properties dropped, duplicated, retyped, emptied, nulled, wrapped in
or taken out of arrays, unknown keys, bad primitive values).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.outcome import operation_outcome
from conformance.support import Support
from conformance.validator import validate_resource
from tests.conformance import before
from tests.conformance.test_validator import CORPUS

PATIENT_URN = "urn:uuid:7c4a2f3e-0b51-4f3a-9a61-3d2b6c1e9f10"


def _appointment(index: int) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": f"a-{index}",
        "identifier": [{"system": "urn:gwbench:appt", "value": f"appt-{index}"}],
        "status": "booked",
        "description": "Synthetic benchmark visit",
        "start": "2027-01-04T14:00:00Z",
        "end": "2027-01-04T14:30:00Z",
        "participant": [
            {"actor": {"reference": PATIENT_URN}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/bench-prac-1", "display": "Dr A"}, "status": "accepted"},
        ],
    }


# Valid documents to mutate when the corpus is not at hand (and beside it when it is): the benchmark's shapes,
# narrative, contained resources, choice types, extensions, primitives' _x siblings, a Questionnaire.
BASES: list[dict[str, Any]] = [
    _appointment(1),
    {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": PATIENT_URN,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:gwbench:mrn", "value": "mrn-1"}],
                    "name": [{"family": "Bench", "given": ["Synthetic1"]}],
                    "birthDate": "1980-01-01",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": _appointment(2), "request": {"method": "PUT", "url": "Appointment/a-2"}},
            {
                "fullUrl": "urn:uuid:0f2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b",
                "resource": {k: v for k, v in _appointment(3).items() if k != "id"},
                "request": {"method": "POST", "url": "Appointment"},
            },
        ],
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "2", "lastUpdated": "2024-05-01T10:00:00.123+02:00", "profile": ["http://x.org/p"]},
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Weight</p></div>'},
        "contained": [{"resourceType": "Practitioner", "id": "p1", "name": [{"text": "Dr B"}]}],
        "extension": [{"url": "http://example.org/x", "valueBoolean": True}],
        "status": "final",
        "_status": {"extension": [{"url": "http://example.org/y", "valueString": "s"}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": "Patient/p", "type": "Patient"},
        "performer": [{"reference": "#p1"}],
        "effectiveDateTime": "2024-02-29T08:15:00Z",
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "component": [
            {"code": {"text": "x"}, "valueInteger": 3},
            {"code": {"text": "y"}, "valuePeriod": {"start": "2024", "end": "2024-03"}},
        ],
    },
    {
        "resourceType": "Patient",
        "id": "pat",
        "active": True,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"], "_given": [None, {"id": "g"}]}],
        "telecom": [{"system": "phone", "value": "555", "use": "home", "rank": 1}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "deceasedBoolean": False,
        "multipleBirthInteger": 2,
        "photo": [{"contentType": "image/png", "data": "aGVsbG8="}],
        "address": [{"line": ["1 Street"], "period": {"start": "2000-01-01"}}],
        "managingOrganization": {"reference": "Organization/1"},
    },
    {
        "resourceType": "Questionnaire",
        "id": "q",
        "url": "http://example.org/Questionnaire/q",
        "status": "active",
        "item": [
            {"linkId": "1", "text": "Name?", "type": "string", "required": True},
            {
                "linkId": "2",
                "type": "choice",
                "answerOption": [{"valueCoding": {"code": "a"}}, {"valueString": "b"}],
                "enableWhen": [{"question": "1", "operator": "exists", "answerBoolean": True}],
            },
            {"linkId": "3", "type": "group", "item": [{"linkId": "3.1", "type": "decimal"}]},
        ],
    },
]


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.json")) if CORPUS.is_dir() else []


def _read(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def _same(document: object, **kwargs: Any) -> None:
    old = before.validator()
    old_outcome = before.module("outcome").operation_outcome
    expected = old_outcome(old(copy.deepcopy(document), **kwargs.get("old", {})))
    found = operation_outcome(validate_resource(document, **kwargs.get("new", {})))
    assert found == expected


@pytest.mark.corpus
def test_every_corpus_document_gets_the_same_outcome_as_before() -> None:
    files = _corpus_files()
    if not files:
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    old = before.validator()
    old_outcome = before.module("outcome").operation_outcome
    differing: list[str] = []
    compared = 0
    for path in files:
        try:
            document = _read(path)
        except ValueError:
            continue
        documents = [document]
        if type(document) is dict and type(document.get("entry")) is list:  # each entry's resource alone too
            documents += [e["resource"] for e in document["entry"] if type(e) is dict and "resource" in e]
        for item in documents:
            compared += 1
            if operation_outcome(validate_resource(item)) != old_outcome(old(item)):
                differing.append(path.relative_to(CORPUS).as_posix())
    assert compared > 700
    assert differing == []


@pytest.mark.corpus
def test_the_validator_test_cases_with_their_support_get_the_same_outcome_as_before() -> None:
    cases = CORPUS / "fhir-test-cases" / "validator-r4"
    if not (cases / "index.json").is_file():
        pytest.skip(f"the validator test cases are not at {cases} (set GATEWAY_CORPUS_DIR)")
    old = before.validator()
    old_support = before.module("support").Support
    old_outcome = before.module("outcome").operation_outcome
    differing: list[str] = []
    for case in json.loads((cases / "index.json").read_text(encoding="utf-8")):
        try:
            document = _read(cases / case["file"])
        except (OSError, ValueError):
            continue
        supports = (Support(), old_support())
        for name in case.get("supporting") or ():
            path = cases / "supporting" / name
            if path.suffix == ".json":
                for support in supports:
                    support.add(_read(path))
        profiles = [case["profile"]] if isinstance(case.get("profile"), str) else []
        found = operation_outcome(validate_resource(document, support=supports[0], profiles=profiles))
        if found != old_outcome(old(document, support=supports[1], profiles=profiles)):
            differing.append(case["name"])
    assert differing == []


def _bases() -> list[dict[str, Any]]:
    found = list(BASES)
    files = _corpus_files()
    for path in files[:: max(1, len(files) // 60)]:
        try:
            document = _read(path)
        except ValueError:
            continue
        if type(document) is dict and "resourceType" in document and len(json.dumps(document)) < 20_000:
            found.append(document)
    return found


_BASES = _bases()
# Values a property may be given instead of its own.
_VALUES: list[object] = [
    None,
    True,
    0,
    -1,
    2**31,
    1.5,
    "",
    " x",
    "a  b",
    "x",
    "bad_id!",
    "urn:uuid:NOT-A-UUID",
    "urn:oid:1.2",
    "#p1",
    "2023-02-30",
    "2024-02-29T24:00:00Z",
    "2024-02-29",
    "10:00",
    "lone \ud800",
    "has space",
    "booked",
    "Patient/1",
    "http://hl7.org/fhir/Patient/1",
    {},
    [],
    [None],
    [{}],
    {"id": "only"},
    {"extension": [{"url": "http://e.org/x", "valueString": "v"}]},
    {"reference": "#missing"},
    {"resourceType": "Basic", "code": {"text": "c"}},
]


# Changes of a string value that the walk's fast paths must still see (dates, URIs, codes, whitespace, Unicode).
_TWEAKS = [
    str.upper,
    lambda s: " " + s,
    lambda s: s + " ",
    lambda s: s + "\t",
    lambda s: s + "\u00a0",
    lambda s: s + "\x1c",
    lambda s: s + "\u2028",
    lambda s: s + "\ud800",
    lambda s: s + "\U0001f600",
    lambda s: s[: len(s) // 2],
    lambda s: "urn:uuid:" + s,
    lambda s: "urn:oid:" + s,
    lambda s: "urn:" + s,
    lambda s: "#" + s,
    lambda s: s.replace("-", ""),
    lambda s: s[:5] + "02-29" + s[10:],
    lambda s: "2023" + s[4:],
    lambda s: "2000" + s[4:],
    lambda s: "0000" + s[4:],
    lambda s: s[:5] + "13" + s[7:],
    lambda s: s[:8] + "31" + s[10:],
    lambda s: s[:8] + "00" + s[10:],
    lambda s: s[:10] + "T24:00:00Z",
    lambda s: s[:10] + "T23:59:60.5+14:00",
    lambda s: s[:10] + "T10:00:00+14:01",
    lambda s: s[:10] + "T10:00:00",
    lambda s: s[:10] + "t10:00:00Z",
    lambda s: s[:4] + "/" + s[5:],
    lambda s: s[:10],
    lambda s: s[:7],
    lambda s: s + "Z",
]


def _locations(node: object, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of the document, depth first."""
    if type(node) is dict:
        for key in list(node):
            found.append((node, key))
            _locations(node[key], found)
    elif type(node) is list:
        for index in range(len(node)):
            found.append((node, index))
            _locations(node[index], found)
    return found


def _mutate(document: dict[str, Any], data: st.DataObject) -> None:
    locations = _locations(document, [])
    if not locations:
        return
    container, key = data.draw(st.sampled_from(locations))
    value = container[key]
    operation = data.draw(
        st.sampled_from(
            ["drop", "duplicate", "retype", "wrap", "unwrap", "unknown", "rename", "empty", "copy-in", "tweak", "tweak"]
        )
    )
    if operation == "tweak":
        strings = [(c, k) for c, k in locations if type(c[k]) is str] or [(container, key)]
        container, key = data.draw(st.sampled_from(strings))
        if type(container[key]) is str:
            container[key] = data.draw(st.sampled_from(_TWEAKS))(container[key])
    elif operation == "drop":
        del container[key]
    elif operation == "duplicate":
        container[key] = [value, copy.deepcopy(value)] if type(value) is not list else value + copy.deepcopy(value)
    elif operation == "retype":
        container[key] = copy.deepcopy(data.draw(st.sampled_from(_VALUES)))
    elif operation == "wrap":
        container[key] = [value]
    elif operation == "unwrap":
        container[key] = value[0] if type(value) is list and value else value
    elif operation == "unknown" and type(container) is dict:
        container[data.draw(st.sampled_from(["unknownThing", "_unknown", "bad key!", "valueString", "_status"]))] = (
            copy.deepcopy(data.draw(st.sampled_from(_VALUES)))
        )
    elif operation == "rename" and type(container) is dict:
        new = data.draw(st.sampled_from(["_" + str(key), str(key) + "X", "value" + str(key).title(), "id", "text"]))
        container[new] = container.pop(key)
    elif operation == "empty":
        container[key] = {} if type(value) is dict else [] if type(value) is list else ""
    elif operation == "copy-in":
        other = data.draw(st.sampled_from(locations))
        container[key] = copy.deepcopy(other[0][other[1]])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_resources_get_the_same_outcome_as_before(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(_BASES)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        _mutate(document, data)
    _same(document)


@pytest.mark.parametrize("document", BASES, ids=[d["resourceType"] for d in BASES])
def test_the_valid_bases_get_the_same_outcome_as_before(document: dict[str, Any]) -> None:
    _same(document)


def _strings(node: object) -> list[tuple[Any, Any]]:
    return [(c, k) for c, k in _locations(node, []) if type(c[k]) is str]


@pytest.mark.parametrize("base", range(len(BASES)), ids=[d["resourceType"] for d in BASES])
def test_every_string_changed_every_way_gets_the_same_outcome_as_before(base: int) -> None:
    """Each string of each valid base, changed by each of ``_TWEAKS`` in turn (the fast paths' edges)."""
    old = before.validator()
    old_outcome = before.module("outcome").operation_outcome
    document = copy.deepcopy(BASES[base])
    differing: list[tuple[object, str]] = []
    for container, key in _strings(document):
        original = container[key]
        for tweak in _TWEAKS:
            container[key] = tweak(original)
            if operation_outcome(validate_resource(document)) != old_outcome(old(document)):
                differing.append((key, container[key]))
        container[key] = original
    assert differing == []


def test_a_day_seen_valid_in_one_year_is_not_taken_for_valid_in_another() -> None:
    """The walk's memo of valid date parts never holds 29 February (valid only in leap years)."""
    for valid in ("2024-02-29T08:15:00Z", "2023-01-01T08:15:00Z", "2024-02-29", "2023-03-01"):
        _same({**BASES[0], "start": valid, "end": valid, "created": valid[:10]})
    for invalid in ("2023-02-29T08:15:00Z", "2023-02-29"):
        _same({**BASES[0], "start": invalid, "end": invalid, "created": invalid[:10]})
        assert any(i.expression == "Appointment.created" for i in validate_resource({**BASES[0], "created": invalid}))
