"""The QuestionnaireResponse mapper as the platform sees it: scores, severity, risk flags, events and write-back."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance.outcome import has_errors
from conformance.validator import validate_resource
from mappers import instruments
from mappers.answer import Answer, Attachment, Quantity, loinc_code
from mappers.answer_reader import may_score
from mappers.elements import merge_labels
from mappers.errors import MappingError
from mappers.family import canonical_key
from mappers.family import tombstone as deleted_record
from mappers.instruments import ANSWER_DISPLAYS, ANSWER_FOR_SCORE, GAD7, PHQ2, PHQ9, Instrument
from mappers.model import Coding, Identifier, Ref, SecurityLabel
from mappers.registry import MAPPED
from mappers.scoring import assess
from mappers.survey_response import (
    SurveyResponse,
    classify,
    if_none_exist,
    needs,
    to_fhir,
    to_platform,
)
from tests.mappers.conftest import corpus_file, corpus_found, corpus_params, ctx, sent

LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CANONICAL = "https://forms.example/Questionnaire/mood"


def form(instrument: Instrument, link_ids: list[str] | None = None, **elements: Any) -> dict[str, Any]:
    """Return a Questionnaire asking the instrument's questions by LOINC code, with the clinic's own linkIds."""
    ids = link_ids or [f"q{n}" for n in range(1, len(instrument.item_codes) + 1)]
    items = [
        {"linkId": link_id, "type": "choice", "code": [{"system": LOINC, "code": code}]}
        for link_id, code in zip(ids, instrument.item_codes, strict=True)
    ]
    items.append({"linkId": "total", "type": "integer", "code": [{"system": LOINC, "code": instrument.total_code}]})
    resource = {"resourceType": "Questionnaire", "id": "mood", "url": CANONICAL, "status": "active", "item": items}
    return resource | elements


def held(questionnaire: dict[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Return ``related`` as the worker delivers it when it holds the Questionnaire."""
    return {canonical_key("Questionnaire", questionnaire["url"]): questionnaire}


def coded(points: int) -> dict[str, Any]:
    return {"valueCoding": {"system": LOINC, "code": ANSWER_FOR_SCORE[points]}}


def response(answers: list[tuple[str, dict[str, Any]]], **elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr1",
        "questionnaire": CANONICAL,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2024-03-05T09:30:00-05:00",
        "item": [{"linkId": link_id, "answer": [answer]} for link_id, answer in answers],
    }
    return resource | elements


def answered(instrument: Instrument, points: list[int], **elements: Any) -> dict[str, Any]:
    ids = [f"q{n}" for n in range(1, len(points) + 1)]
    return response([(i, coded(p)) for i, p in zip(ids, points, strict=True)], **elements)


def spread(instrument: Instrument, total: int) -> list[int]:
    """Return item scores that add up to ``total``, filling from the first item."""
    points = []
    for _ in instrument.item_codes:
        points.append(min(3, total))
        total -= points[-1]
    return points


def scored(instrument: Instrument, points: list[int], **elements: Any) -> SurveyResponse:
    return to_platform(answered(instrument, points, **elements), ctx(related=held(form(instrument))))


# --- the US Core example, recognized through its Questionnaire -------------------------------------------------


def test_us_core_phq9_example_scores_to_the_total_it_states() -> None:
    questionnaire = corpus_file("us-core-examples/Questionnaire-phq-9-example.json")
    resource = corpus_file("us-core-examples/QuestionnaireResponse-phq-9-example.json")
    assert needs(resource) == [canonical_key("Questionnaire", questionnaire["url"])]
    record = to_platform(resource, ctx(related=held(questionnaire)))
    assert (record.instrument, record.total_score, record.ehr_total_score) == ("phq-9", 12, 12)
    assert (record.severity, record.score_mismatch, record.risk_flags, record.score_reason) == (
        "moderate",
        False,
        [],
        None,
    )
    assert record.survey_id == "phq-9-example"
    assert record.patient == Ref(reference="Patient/example")
    assert record.authored_at == "2022-11-29T20:50:32Z"
    assert [a.weight for a in record.answers[:9]] == [2, 2, 2, 2, 1, 1, 2, 0, 0]
    assert record.answers[0].item_code == Coding(
        system=LOINC, code="44250-9", display="Little interest or pleasure in doing things in last 2 weeks"
    )


def test_us_core_phq9_example_without_its_questionnaire_waits_with_the_reason() -> None:
    record = to_platform(corpus_file("us-core-examples/QuestionnaireResponse-phq-9-example.json"), ctx())
    # Its linkIds look like LOINC codes, but linkIds are local: no instrument until the Questionnaire says so.
    assert (record.instrument, record.total_score, record.score_reason) == (None, None, "questionnaire_not_found")
    assert len(record.answers) == 11


# --- severity, risk and incomplete responses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument", "total", "severity"),
    [
        (PHQ9, 4, "minimal"),
        (PHQ9, 5, "mild"),
        (PHQ9, 9, "mild"),
        (PHQ9, 10, "moderate"),
        (PHQ9, 14, "moderate"),
        (PHQ9, 15, "moderately_severe"),
        (PHQ9, 19, "moderately_severe"),
        (PHQ9, 20, "severe"),
        (PHQ9, 27, "severe"),
        (GAD7, 4, "minimal"),
        (GAD7, 5, "mild"),
        (GAD7, 9, "mild"),
        (GAD7, 10, "moderate"),
        (GAD7, 14, "moderate"),
        (GAD7, 15, "severe"),
        (GAD7, 21, "severe"),
        (PHQ2, 2, "negative"),
        (PHQ2, 3, "positive"),
    ],
)
def test_every_severity_edge(instrument: Instrument, total: int, severity: str) -> None:
    record = scored(instrument, spread(instrument, total))
    assert (record.instrument, record.total_score, record.severity) == (instrument.key, total, severity)
    assert record.score_reason is None


def test_item_nine_above_zero_flags_self_harm_with_a_minimal_total() -> None:
    record = scored(PHQ9, [0] * 8 + [1])
    assert (record.total_score, record.severity, record.risk_flags) == (1, "minimal", ["self_harm"])
    assert classify(None, record) == ["survey_response.completed", "risk.flagged"]
    assert scored(PHQ9, [3] * 8 + [0]).risk_flags == []


def test_an_incomplete_response_is_not_scored_and_says_why() -> None:
    answers = [(f"q{n}", coded(1)) for n in range(1, 10) if n != 5]
    record = to_platform(response(answers), ctx(related=held(form(PHQ9))))
    assert (record.instrument, record.total_score, record.severity) == ("phq-9", None, None)
    assert (record.score_reason, record.unscored_items) == ("missing_answers", ["44251-7"])
    # Item 9 was answered "Several days": the flag does not wait for the rest of the form.
    assert record.risk_flags == ["self_harm"]


def test_a_response_in_progress_is_not_scored_but_flagged() -> None:
    record = scored(PHQ9, [1] * 9, status="in-progress")
    assert (record.status, record.total_score, record.score_reason) == ("in_progress", None, "not_completed")
    assert record.risk_flags == ["self_harm"]
    assert classify(None, record) == ["survey_response.updated", "risk.flagged"]


def test_a_response_entered_in_error_is_neither_scored_nor_flagged() -> None:
    record = scored(PHQ9, [3] * 9, status="entered-in-error")
    assert (record.status, record.total_score, record.score_reason) == ("entered_in_error", None, "entered_in_error")
    assert record.risk_flags == []


def test_an_answer_outside_the_instrument_scale_is_not_summed() -> None:
    answers = [(f"q{n}", coded(1)) for n in range(1, 7)] + [("q7", {"valueInteger": 5})]
    record = to_platform(response(answers), ctx(related=held(form(GAD7))))
    assert (record.total_score, record.score_reason, record.unscored_items) == (None, "unscorable_answers", ["69736-7"])


# --- recognition by code alone -----------------------------------------------------------------------------------

link_ids = st.lists(st.text(min_size=1, max_size=16).filter(str.strip), min_size=10, max_size=10, unique=True)
instrument_points = st.sampled_from([PHQ9, GAD7, PHQ2]).flatmap(
    lambda i: st.tuples(st.just(i), st.lists(st.integers(0, 3), min_size=len(i.item_codes), max_size=len(i.item_codes)))
)


@given(instrument_points, link_ids)
def test_each_instrument_is_recognized_through_its_questionnaire_codes_with_any_link_ids(
    case: tuple[Instrument, list[int]], ids: list[str]
) -> None:
    instrument, points = case
    ids = ids[: len(points)]
    questionnaire = form(instrument, ids)
    resource = response([(i, coded(p)) for i, p in zip(ids, points, strict=True)])
    record = to_platform(resource, ctx(related=held(questionnaire)))
    assert (record.instrument, record.total_score) == (instrument.key, sum(points))
    assert record.risk_flags == (["self_harm"] if instrument is PHQ9 and points[8] > 0 else [])


@given(instrument_points, link_ids)
def test_each_instrument_is_recognized_from_the_response_items_loinc_definitions(
    case: tuple[Instrument, list[int]], ids: list[str]
) -> None:
    instrument, points = case
    items = [
        {"linkId": i, "definition": f"http://loinc.org/fhir/DataElement/{code}", "answer": [coded(p)]}
        for i, code, p in zip(ids[: len(points)], instrument.item_codes, points, strict=True)
    ]
    record = to_platform(response([], item=items, questionnaire=None), ctx())
    assert (record.instrument, record.total_score) == (instrument.key, sum(points))
    assert [a.link_id for a in record.answers] == ids[: len(points)]


def test_a_phq9_asked_two_questions_at_a_time_is_not_mistaken_for_a_phq2() -> None:
    answers = [("q1", coded(3)), ("q2", coded(3))]
    record = to_platform(response(answers), ctx(related=held(form(PHQ9))))
    assert (record.instrument, record.score_reason) == ("phq-9", "missing_answers")
    alone = to_platform(response(answers), ctx(related=held(form(PHQ2))))
    assert (alone.instrument, alone.total_score, alone.severity) == ("phq-2", 6, "positive")


# --- the EHR's own total, weights and vendor numbers -------------------------------------------------------------


def test_the_ehr_total_is_kept_and_a_mismatch_flagged() -> None:
    points = spread(PHQ9, 10)
    answers = [(f"q{n}", coded(p)) for n, p in enumerate(points, start=1)] + [("total", {"valueInteger": 12})]
    record = to_platform(response(answers), ctx(related=held(form(PHQ9))))
    assert (record.total_score, record.ehr_total_score, record.score_mismatch) == (10, 12, True)
    agreeing = [*answers[:-1], ("total", {"valueQuantity": {"value": 10.0, "unit": "{score}"}})]
    record = to_platform(response(agreeing), ctx(related=held(form(PHQ9))))
    assert (record.total_score, record.ehr_total_score, record.score_mismatch) == (10, 10, False)


def test_epic_decimal_numbers_are_whole_integer_scores() -> None:
    answers = [(f"q{n}", {"valueDecimal": 2.0}) for n in range(1, 8)] + [("total", {"valueDecimal": 14.0})]
    for vendor, value_type in (("epic", "integer"), ("generic", "decimal")):
        record = to_platform(response(answers), ctx(vendor=vendor, related=held(form(GAD7))))
        assert (record.total_score, record.ehr_total_score, record.severity) == (14, 14, "moderate")
        assert {a.value_type for a in record.answers[:7]} == {value_type}
        assert isinstance(record.answers[0].value, int)
        # The form declares its total an integer: a whole decimal there is one, from any EHR.
        assert record.answers[7].value_type == "integer"


def test_epic_decimals_stay_decimals_where_the_form_asks_a_decimal() -> None:
    questionnaire = form(PHQ2) | {"item": [{"linkId": "weight", "type": "decimal"}]}
    record = to_platform(
        response([("weight", {"valueDecimal": 70.0})]), ctx(vendor="epic", related=held(questionnaire))
    )
    assert (record.answers[0].value_type, record.answers[0].value) == ("decimal", 70)


def test_local_answer_codes_score_through_the_questionnaires_ordinal_values() -> None:
    local = "https://clinic.example/answers"
    questionnaire = form(PHQ2)
    for item in questionnaire["item"][:2]:
        item["answerOption"] = [
            {
                "valueCoding": {"system": local, "code": f"a{n}"},
                "extension": [{"url": instruments.ORDINAL_VALUE, "valueDecimal": n}],
            }
            for n in range(4)
        ]
    answers = [("q1", {"valueCoding": {"system": local, "code": "a3"}}), ("q2", {"valueCoding": {"code": "a1"}})]
    record = to_platform(response(answers), ctx(related=held(questionnaire)))
    assert ([a.weight for a in record.answers], record.total_score, record.severity) == ([3, 1], 4, "positive")


def test_an_answers_own_ordinal_value_scores_it() -> None:
    weighted = {
        "valueCoding": {
            "system": "https://clinic.example/answers",
            "code": "often",
            "extension": [{"url": instruments.ORDINAL_VALUE, "valueDecimal": 2}],
        }
    }
    record = to_platform(response([("q1", weighted), ("q2", coded(0))]), ctx(related=held(form(PHQ2))))
    assert record.total_score == 2


def test_a_contained_questionnaire_is_read_and_an_uncoded_one_leaves_the_response_unscored() -> None:
    contained = form(PHQ2) | {"id": "inline"}
    del contained["url"]
    resource = answered(PHQ2, [1, 1], questionnaire="#inline", contained=[contained])
    assert needs(resource) == []
    record = to_platform(resource, ctx())
    assert (record.instrument, record.total_score, record.survey_id) == ("phq-2", 2, None)

    # SDC's adaptive PHQ-9 codes only its group (with the total's code): a PHQ-9 whose answers cannot be placed,
    # which is not the patient skipping questions.
    sdc = to_platform(
        corpus_file("sdc-ig-examples/QuestionnaireResponse-adaptive-questionnaireresponse-sdc-example-phq9.json"), ctx()
    )
    assert (sdc.instrument, sdc.total_score, sdc.score_reason) == ("phq-9", None, "unrecognized_items")
    assert len(sdc.unscored_items) == 9


def test_needs_asks_for_the_exact_version_then_any_and_for_a_literal_reference() -> None:
    assert needs({"questionnaire": f"{CANONICAL}|3"}) == [
        canonical_key("Questionnaire", f"{CANONICAL}|3"),
        canonical_key("Questionnaire", CANONICAL),
    ]
    assert needs({"questionnaire": "Questionnaire/gcs"}) == [
        canonical_key("Questionnaire", "Questionnaire/gcs"),
        "Questionnaire/gcs",
    ]
    assert needs({"questionnaire": "#contained"}) == needs({}) == needs({"questionnaire": 7}) == []


def test_a_questionnaire_held_by_literal_reference_is_read() -> None:
    questionnaire = form(PHQ2) | {"id": "phq2"}
    del questionnaire["url"]
    resource = answered(PHQ2, [2, 2], questionnaire="Questionnaire/phq2")
    record = to_platform(resource, ctx(related={"Questionnaire/phq2": questionnaire}))
    assert (record.instrument, record.total_score, record.survey_id) == ("phq-2", 4, "phq2")


def test_what_the_record_does_not_carry_is_listed_as_unmapped() -> None:
    signature = {"url": "https://ehr.example/signed", "valueBoolean": True}
    resource = answered(
        PHQ2,
        [1, 1],
        extension=[signature],
        contained=[{"resourceType": "Provenance", "id": "p"}],
        item=[
            {"linkId": "q1", "answer": [coded(1) | {"extension": [signature]}]},
            {"linkId": "q2", "answer": [coded(1)]},
        ],
    )
    record = to_platform(resource, ctx(related=held(form(PHQ2))))
    assert record.unmapped == [
        "contained",
        "extension('https://ehr.example/signed')",
        "item.answer.extension('https://ehr.example/signed')",
    ]
    # A contained Questionnaire the response names is read, and so not listed.
    inline = answered(PHQ2, [1, 1], questionnaire="#f", contained=[form(PHQ2) | {"id": "f"}])
    assert to_platform(inline, ctx()).unmapped == []


# --- security labels ---------------------------------------------------------------------------------------------


def test_labels_of_the_response_its_contained_and_its_questionnaire_are_all_kept() -> None:
    questionnaire = form(PHQ2) | {"meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]}}
    resource = answered(
        PHQ2,
        [0, 0],
        meta={"security": [{"system": ACT_CODE, "code": "ETH"}, "R"]},
        contained=[{"resourceType": "Provenance", "id": "p", "meta": {"security": [{"code": "42CFRPart2"}]}}],
    )
    record = to_platform(resource, ctx(related=held(questionnaire)))
    assert record.security == [
        SecurityLabel(system=None, code="42CFRPart2"),
        SecurityLabel(system=None, code="R"),
        SecurityLabel(system=ACT_CODE, code="ETH"),
        SecurityLabel(system=ACT_CODE, code="PSY"),
    ]
    assert deleted_record(record, ctx("2")).security == record.security
    assert to_fhir(record, ctx())["meta"]["security"][3] == {"system": ACT_CODE, "code": "PSY"}


label = st.fixed_dictionaries(
    {"code": st.text(min_size=1, max_size=12).filter(str.strip)},
    optional={"system": st.sampled_from([ACT_CODE, "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"])},
)
labels = st.lists(label, max_size=4)


@given(labels, labels, labels, st.booleans())
def test_fhir_to_platform_never_drops_a_security_label(
    own: list[dict[str, str]], inner: list[dict[str, str]], form_labels: list[dict[str, str]], versioned: bool
) -> None:
    questionnaire = form(PHQ9) | {"meta": {"security": form_labels}}
    resource = answered(
        PHQ9,
        [1] * 9,
        questionnaire=f"{CANONICAL}|1" if versioned else CANONICAL,
        meta={"security": own},
        contained=[{"resourceType": "Binary", "id": "b", "meta": {"security": inner}}],
    )
    record = to_platform(resource, ctx(related=held(questionnaire)))
    kept = {(label.system, label.code) for label in record.security}
    assert {(each.get("system"), each["code"]) for each in own + inner + form_labels} <= kept
    assert len(kept) == len(record.security)


# --- change events -----------------------------------------------------------------------------------------------


def test_classify_completion_amendment_and_updates() -> None:
    in_progress = scored(PHQ9, [0] * 9, status="in-progress")
    completed = scored(PHQ9, [0] * 9)
    assert classify(None, in_progress) == ["survey_response.updated"]
    assert classify(in_progress, completed) == ["survey_response.completed"]
    assert classify(completed, scored(PHQ9, [0] * 9, status="amended")) == ["survey_response.amended"]
    # The EHR corrects an answer and keeps "completed": still an amendment the platform must see.
    assert classify(completed, scored(PHQ9, [1] + [0] * 8)) == ["survey_response.amended"]
    assert classify(completed, scored(PHQ9, [0] * 9, authored="2024-03-06T09:30:00Z")) == ["survey_response.updated"]
    assert classify(completed, scored(PHQ9, [0] * 9)) == []


def test_classify_flags_a_risk_once() -> None:
    flagged = scored(PHQ9, [0] * 8 + [2])
    assert classify(scored(PHQ9, [0] * 9), flagged) == ["survey_response.amended", "risk.flagged"]
    assert classify(flagged, scored(PHQ9, [1] * 8 + [2])) == ["survey_response.amended"]


def test_a_late_questionnaire_turns_the_same_response_into_a_scored_and_flagged_one() -> None:
    resource = answered(PHQ9, [0] * 8 + [1])
    early = to_platform(resource, ctx())
    assert (early.total_score, early.risk_flags) == (None, [])
    late = to_platform(resource, ctx(related=held(form(PHQ9))))
    assert (late.total_score, late.risk_flags) == (1, ["self_harm"])
    assert classify(early, late) == ["survey_response.updated", "risk.flagged"]


def test_classify_deleted_and_recreated() -> None:
    record = scored(PHQ9, [0] * 8 + [1])
    tombstone = deleted_record(record, ctx("2"))
    assert tombstone.deleted and tombstone.source.fhir_url == "QuestionnaireResponse/qr1/_history/2"
    assert classify(record, tombstone) == ["survey_response.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, record) == ["survey_response.completed", "risk.flagged"]


# --- write-back --------------------------------------------------------------------------------------------------


def test_to_fhir_writes_a_questionnaire_response_an_ehr_accepts() -> None:
    record = scored(PHQ2, [1, 2], identifier={"system": "urn:oid:1.2.3", "value": "resp-7"})
    resource = to_fhir(record, ctx())
    assert {k: resource[k] for k in ("resourceType", "questionnaire", "status", "subject", "authored")} == {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": CANONICAL,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2024-03-05T14:30:00Z",
    }
    assert resource["identifier"] == {"system": "urn:oid:1.2.3", "value": "resp-7"}
    assert if_none_exist(resource) == "identifier=urn:oid:1.2.3|resp-7"
    assert resource["item"][0] == {
        "linkId": "q1",
        "definition": "http://loinc.org/fhir/DataElement/44250-9",
        "answer": [{"valueCoding": {"system": LOINC, "code": "LA6569-3"}}],
    }


def test_a_retried_write_back_carries_the_same_identifier() -> None:
    record = scored(PHQ2, [0, 0])
    first, again = to_fhir(record, ctx()), to_fhir(record, ctx("2"))
    assert first["identifier"] == again["identifier"]
    assert first["identifier"]["value"].startswith("urn:uuid:")
    other = to_fhir(record.model_copy(update={"id": "qr2"}), ctx())
    assert other["identifier"] != first["identifier"]


def test_a_platform_score_without_a_code_is_written_with_the_instruments_loinc_answer() -> None:
    answer = Answer(
        link_id="mood",
        item_code=Coding(system=LOINC, code="44255-8"),
        value_type="coding",
        value=Coding(display="Several days"),
        weight=1,
    )
    record = scored(PHQ2, [0, 0]).model_copy(update={"answers": [answer]})
    [item] = to_fhir(record, ctx())["item"]
    assert item["answer"] == [{"valueCoding": {"system": LOINC, "code": "LA6569-3", "display": "Several days"}}]


def test_epic_write_backs_send_numbers_as_decimals() -> None:
    answers = [(f"q{n}", {"valueInteger": 1}) for n in range(1, 3)]
    record = to_platform(response(answers), ctx(related=held(form(PHQ2))))
    written = to_fhir(record, ctx(vendor="epic"))
    assert [a["answer"] for a in written["item"]] == [[{"valueInteger": 1}]] * 2, "to_fhir: the same for every vendor"
    assert [a["answer"] for a in sent(written, "epic")["item"]] == [[{"valueDecimal": 1}]] * 2
    assert [a["answer"] for a in sent(to_fhir(record, ctx()), "generic")["item"]] == [[{"valueInteger": 1}]] * 2


def test_epic_decimals_reach_answers_nested_under_groups_and_answers() -> None:
    nested = {"linkId": "q2", "answer": [{"valueInteger": 3}]}
    question = {"linkId": "q1", "answer": [{"valueInteger": 2, "item": [nested]}]}
    written = response([]) | {
        "item": [{"linkId": "g", "item": [question]}, {"linkId": "q3", "answer": [{"valueString": "ok"}]}]
    }
    [group, free] = sent(written, "epic")["item"]
    [answer] = group["item"][0]["answer"]
    assert answer["valueDecimal"] == 2 and "valueInteger" not in answer
    assert answer["item"] == [{"linkId": "q2", "answer": [{"valueDecimal": 3}]}]
    assert free["answer"] == [{"valueString": "ok"}]


# Round trip: generated platform records -> FHIR -> platform give back the same record.

text = st.text(min_size=1, max_size=20).filter(str.strip)
maybe_text = st.none() | text
free_loinc = st.from_regex(r"\A[1-9][0-9]{3,4}-[0-9]\Z").filter(
    lambda code: (
        code not in instruments.ITEM_CODES | instruments.TOTAL_CODES
        and all(code not in i.panel_codes for i in instruments.INSTRUMENTS)
    )
)
codings = st.builds(Coding, system=maybe_text, code=text, display=maybe_text)
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))


def free_values(vendor: str) -> st.SearchStrategy[tuple[str, Any, Any]]:
    """(value type, value, weight) of answers to items no instrument scores."""
    decimals = st.floats(-1e6, 1e6, allow_nan=False)
    if vendor == "epic":
        decimals = decimals.filter(lambda d: not d.is_integer())  # a whole decimal from Epic is an integer
    weights = st.none() | st.integers(-5, 10) | st.floats(-5, 10).map(lambda w: round(w, 2))
    return st.one_of(
        st.tuples(st.just("string"), text, st.none()),
        st.tuples(st.just("boolean"), st.booleans(), st.none()),
        st.tuples(st.just("integer"), st.integers(-1000, 1000), st.none()),
        st.tuples(st.just("decimal"), decimals, st.none()),
        st.tuples(st.just("date"), st.dates().map(str), st.none()),
        st.tuples(st.just("date_time"), moments.map(lambda m: m.isoformat()), st.none()),
        st.tuples(st.just("time"), st.times().map(lambda t: t.strftime("%H:%M:%S")), st.none()),
        st.tuples(st.just("uri"), text.map(lambda t: f"urn:x:{t}"), st.none()),
        st.tuples(st.just("coding"), codings, weights),
        st.tuples(st.just("quantity"), st.builds(Quantity, value=st.integers(0, 500), unit=maybe_text), st.none()),
        st.tuples(st.just("reference"), st.builds(Ref, reference=text.map(lambda t: f"Practitioner/{t}")), st.none()),
        st.tuples(st.just("attachment"), st.builds(Attachment, title=text, size=st.none() | st.integers(0)), st.none()),
    )


@st.composite
def survey_responses(draw: st.DrawFn, vendor: str) -> SurveyResponse:
    # Any string can be a linkId; a counter keeps them unique without a costly unique draw.
    stems = draw(st.lists(text, min_size=1, max_size=4))
    ids = (f"{stems[n % len(stems)]}{n}" for n in range(1000))
    answers: list[Answer] = []
    for instrument in draw(st.lists(st.sampled_from([PHQ9, GAD7, PHQ2]), max_size=2, unique_by=lambda i: i.key)):
        for code in draw(st.lists(st.sampled_from(instrument.item_codes), unique=True)):
            points = draw(st.integers(0, 3))
            item_code = Coding(system=LOINC, code=code)
            if draw(st.booleans()):
                la = ANSWER_FOR_SCORE[points]
                value: Any = Coding(system=LOINC, code=la, display=draw(st.sampled_from([None, ANSWER_DISPLAYS[la]])))
                answers.append(
                    Answer(
                        link_id=next(ids),
                        item_code=item_code,
                        value_type="coding",
                        value=value,
                        weight=points,
                        question=draw(maybe_text),
                    )
                )
            else:
                answers.append(
                    Answer(link_id=next(ids), item_code=item_code, value_type="integer", value=points, weight=points)
                )
        if draw(st.booleans()):
            total = draw(st.integers(0, instrument.max_score))
            total_code = Coding(system=LOINC, code=instrument.total_code)
            answers.append(Answer(link_id=next(ids), item_code=total_code, value_type="integer", value=total))
    for _ in range(draw(st.integers(0, 4))):
        shape = draw(st.sampled_from(["question", "repeats", "group", "nested"]))
        link_id, code = next(ids), draw(st.none() | free_loinc.map(lambda c: Coding(system=LOINC, code=c)))
        path = [next(ids)] if shape == "group" else []
        question = draw(maybe_text)
        for _ in range(2 if shape == "repeats" else 1):
            value_type, value, weight = draw(free_values(vendor))
            answers.append(
                Answer(
                    link_id=link_id,
                    path=path,
                    item_code=code,
                    question=question,
                    value_type=value_type,
                    value=value,
                    weight=weight,
                )
            )
        if shape == "nested":
            value_type, value, weight = draw(free_values(vendor))
            answers.append(Answer(link_id=next(ids), path=[link_id], value_type=value_type, value=value, weight=weight))
    status = draw(st.sampled_from(["in_progress", "completed", "amended", "entered_in_error", "stopped"]))
    survey = draw(st.none() | text.map(lambda t: f"https://forms.example/Questionnaire/{t}"))
    # Scored as the gateway scores a response it holds no Questionnaire of.
    uncoded = any(loinc_code(a.item_code) is None and may_score(a) for a in answers)
    assessment = assess(answers, status, questionnaire_missing=survey is not None, uncoded=uncoded)
    subject = Ref(reference=f"Patient/{draw(st.from_regex(r'[A-Za-z0-9]{1,12}', fullmatch=True))}")
    security = draw(
        st.lists(
            st.builds(SecurityLabel, system=maybe_text, code=text, display=maybe_text),
            max_size=3,
            unique_by=lambda s: (s.system, s.code),
        ).map(lambda found: merge_labels([found]))
    )
    return SurveyResponse(
        id=draw(st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)),
        survey=survey,
        status=status,
        subject=subject,
        patient=subject,
        encounter=draw(st.none() | st.builds(Ref, reference=st.just("Encounter/e1"), display=maybe_text)),
        author=draw(st.none() | st.builds(Ref, reference=st.just("Practitioner/dr"))),
        answered_by=draw(st.none() | st.just(subject)),
        authored_at=draw(st.none() | moments.map(lambda m: m.strftime("%Y-%m-%dT%H:%M:%SZ"))),
        answers=answers,
        **assessment.record_fields(),
        security=security,
        source=ctx().source("QuestionnaireResponse", "placeholder", [Identifier(system="urn:x", value="1")]),
    )


@pytest.mark.parametrize("vendor", ["generic", "epic"])
@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_platform_to_fhir_to_platform_gives_back_the_same_record(vendor: str, data: st.DataObject) -> None:
    record = data.draw(survey_responses(vendor))
    back = to_platform(to_fhir(record, ctx(vendor=vendor)), ctx(vendor=vendor))
    assert back.model_dump(exclude={"source"}) == record.model_dump(exclude={"source"})


@pytest.mark.parametrize("vendor", ["generic", "epic"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_response_sent_as_its_vendor_adjusted_model_gives_back_the_same_record(
    vendor: str, data: st.DataObject
) -> None:
    """Whatever the R4 validator takes, a write-back sends (the R4B model's export, with Epic's decimals) and it
    reads back the same; the export writes a UTC offset as Z, so dateTime answers are compared as instants."""
    record = data.draw(survey_responses(vendor))
    written = to_fhir(record, ctx(vendor=vendor))
    assume(not has_errors(validate_resource(written)))
    back = to_platform(sent(written, vendor), ctx(vendor=vendor))
    assert _instants(back) == _instants(record)


def _instants(record: SurveyResponse) -> dict[str, Any]:
    found = record.model_dump(exclude={"source"})
    for answer in found["answers"]:
        if answer["value_type"] == "date_time":
            answer["value"] = datetime.fromisoformat(answer["value"])
    return found


# --- robustness, registry and the corpus -------------------------------------------------------------------------


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "odd",
            "status": "done",
            "questionnaire": ["not", "a", "string"],
            "subject": "Patient/1",
            "authored": 20240101,
            "item": [
                "nonsense",
                {"linkId": "a", "answer": ["x", {"valueInteger": "3"}, {"valueCoding": {}}, {"valueBoolean": False}]},
                {"linkId": "b", "answer": {"valueString": "a lone answer"}, "item": {"linkId": "c"}},
                {"answer": [{"valueDate": "2024-01-01", "item": [{"linkId": "d", "answer": [{"valueTime": 9}]}]}]},
            ],
            "meta": {"security": [{"system": ACT_CODE}]},
        },
        ctx(),
    )
    assert (record.status, record.survey, record.subject, record.authored_at) == ("unknown", None, None, None)
    assert [(a.link_id, a.value_type, a.value) for a in record.answers] == [
        ("a", "boolean", False),
        ("b", "string", "a lone answer"),
        (None, "date", "2024-01-01"),
    ]
    assert record.score_reason == "not_an_instrument"
    assert record.security == [SecurityLabel(system=ACT_CODE, code="")]


@pytest.mark.parametrize(
    "resource",
    [{"resourceType": "Questionnaire", "id": "q"}, {"id": "x"}, [], {"resourceType": "QuestionnaireResponse"}],
)
def test_input_that_is_not_a_questionnaire_response_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


def test_registry_serves_survey_responses_by_patient_and_authored_time() -> None:
    family = MAPPED["QuestionnaireResponse"]
    assert (family.record_type, family.route) == ("survey_response", "survey-responses")
    record = family.to_platform(answered(PHQ2, [0, 0], authored="1970-01-01T00:01:00Z"), ctx())
    assert family.index_fields(record) == {"patient": "Patient/p1", "sort": 60.0, "status": "completed"}
    assert family.needs(answered(PHQ2, [0, 0])) == [canonical_key("Questionnaire", CANONICAL)]
    assert family.model.model_validate_json(record.model_dump_json()) == record
    group = to_platform(answered(PHQ2, [0, 0], subject={"reference": "Group/g1"}), ctx())
    assert (group.subject, group.patient) == (Ref(reference="Group/g1"), None)


@cache
def corpus_questionnaires() -> dict[str, dict[str, Any]]:
    """Every corpus Questionnaire by the keys the worker delivers it under."""
    held: dict[str, dict[str, Any]] = {}
    for _, (_, resource, _) in corpus_found("Questionnaire"):
        url, version = resource.get("url"), resource.get("version")
        if isinstance(url, str):
            held.setdefault(canonical_key("Questionnaire", url), resource)
            if isinstance(version, str):
                held.setdefault(canonical_key("Questionnaire", f"{url}|{version}"), resource)
        if isinstance(resource.get("id"), str):
            held.setdefault(f"Questionnaire/{resource['id']}", resource)
    return held


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("QuestionnaireResponse"))
def test_every_corpus_questionnaire_response_maps(resource: dict[str, Any]) -> None:
    if not resource.get("id"):
        resource = resource | {"id": "assigned-by-gateway"}
    related = {key: q for key in needs(resource) if (q := corpus_questionnaires().get(key)) is not None}
    original = copy.deepcopy(resource)
    record = to_platform(resource, ctx(related=related))
    assert resource == original, "the mapper must not modify its input"
    assert SurveyResponse.model_validate_json(record.model_dump_json()) == record
    assert (record.total_score is None) == (record.score_reason is not None)
    assert classify(record, to_platform(resource, ctx("2", related=related))) == []
    to_fhir(record, ctx())


def test_an_item_code_that_is_not_a_loinc_code_writes_no_loinc_definition() -> None:
    # A code without a system reads as LOINC, but only a LOINC-shaped one names a LOINC data element.
    answers = [
        Answer(link_id="a", item_code=Coding(code="local 7"), value_type="boolean", value=True),
        Answer(link_id="b", item_code=Coding(code="44250-9"), value_type="boolean", value=True),
    ]
    record = to_platform(response([("x", {"valueInteger": 1})]), ctx()).model_copy(update={"answers": answers})
    written = to_fhir(record, ctx())
    assert [item.get("definition") for item in written["item"]] == [None, "http://loinc.org/fhir/DataElement/44250-9"]
    assert not has_errors(validate_resource(written))


def test_sub_items_answered_before_their_question_are_written_under_its_answer() -> None:
    # R4 (qrs-1): a question's sub-items sit under its answer, never beside it, whatever order they were given in.
    answers = [
        Answer(link_id="detail", path=["smoker"], value_type="integer", value=10),
        Answer(link_id="smoker", value_type="boolean", value=True),
    ]
    record = to_platform(response([("x", {"valueInteger": 1})]), ctx()).model_copy(update={"answers": answers})
    written = to_fhir(record, ctx())
    assert written["item"] == [
        {"linkId": "smoker", "answer": [{"valueBoolean": True,
                                         "item": [{"linkId": "detail", "answer": [{"valueInteger": 10}]}]}]}
    ]  # fmt: skip
    assert not has_errors(validate_resource(written))
    back = to_platform(written, ctx())
    assert sorted((a.link_id, a.path) for a in back.answers) == [("detail", ["smoker"]), ("smoker", [])]
