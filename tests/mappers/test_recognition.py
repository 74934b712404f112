"""Forms coded only at the panel: their questions recognized by position and answer list, or by the tenant's
item map; and when neither holds, a response that says its items were not recognized and asks a person to look.

The forms are built from the instruments' public definitions: PHQ-9 (LOINC 44249-1) and GAD-7 (69737-5), nine and
seven questions, each answered from LOINC's list LL358-3 ("Not at all" 0 ... "Nearly every day" 3).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.codes import LocalCodes
from mappers.instruments import ANSWER_DISPLAYS, ANSWER_LIST, GAD7, PHQ9, Instrument
from mappers.survey import to_platform as survey_to_platform
from mappers.survey_response import SurveyResponse, classify, to_platform
from tests.mappers.conftest import ctx
from tests.mappers.test_survey_response import CANONICAL, LOINC, coded, held, response

LOCAL = "https://ehr.clinic.example/answers"
# Item 9 ("thoughts that you would be better off dead...") answered "Nearly every day".
POINTS = [1, 0, 2, 1, 0, 0, 1, 0, 3]


def loinc_options() -> list[dict[str, Any]]:
    return [
        {"valueCoding": {"system": LOINC, "code": code, "display": ANSWER_DISPLAYS[code]}} for code in ANSWER_DISPLAYS
    ]


def question(link_id: str, options: list[dict[str, Any]] | None = None, **elements: Any) -> dict[str, Any]:
    """Return an uncoded choice question offering ``options`` (LL358-3 by its LOINC codes by default)."""
    return {
        "linkId": link_id,
        "type": "choice",
        "answerOption": loinc_options() if options is None else options,
    } | elements


def panel_form(instrument: Instrument = PHQ9, questions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return a Questionnaire coded only at the panel, asking uncoded questions q1, q2..."""
    asked = questions or [question(f"q{n}") for n in range(1, len(instrument.item_codes) + 1)]
    code = next(iter(instrument.panel_codes))
    return {
        "resourceType": "Questionnaire",
        "id": "mood",
        "url": CANONICAL,
        "status": "active",
        "code": [{"system": LOINC, "code": code}],
        "item": asked,
    }


def answers(points: list[int], answer: Any = coded, prefix: str = "q") -> dict[str, Any]:
    return response([(f"{prefix}{n}", answer(p)) for n, p in enumerate(points, start=1)])


def mapped(questionnaire: dict[str, Any], resource: dict[str, Any], **context: Any) -> SurveyResponse:
    return to_platform(resource, ctx(related=held(questionnaire), **context))


def test_a_phq9_coded_only_at_the_panel_is_scored_and_flagged_by_position() -> None:
    record = mapped(panel_form(), answers(POINTS))
    assert (record.instrument, record.total_score, record.severity) == ("phq-9", 8, "mild")
    assert (record.score_reason, record.risk_flags) == (None, ["self_harm"])
    assert [a.item_code.code for a in record.answers if a.item_code] == list(PHQ9.item_codes)
    assert classify(None, record) == ["survey_response.completed", "risk.flagged"]


@given(st.lists(st.integers(0, 3), min_size=9, max_size=9), st.permutations([f"local-{n}" for n in range(9)]))
def test_any_panel_only_phq9_scores_the_sum_and_flags_item_nine(points: list[int], link_ids: list[str]) -> None:
    questionnaire = panel_form(questions=[question(link_id) for link_id in link_ids])
    record = mapped(questionnaire, response([(link_id, coded(p)) for link_id, p in zip(link_ids, points, strict=True)]))
    assert (record.total_score, record.score_reason) == (sum(points), None)
    assert record.risk_flags == (["self_harm"] if points[8] > 0 else [])


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(None, id="named-list"),
        pytest.param(
            [
                {"valueCoding": {"system": LOCAL, "code": f"a{n}", "display": words}}
                for n, words in enumerate(ANSWER_DISPLAYS.values())
            ],
            id="local-codes-with-the-list-words",
        ),
        pytest.param(
            [
                {
                    "valueCoding": {
                        "system": LOCAL,
                        "code": f"a{n}",
                        "extension": [
                            {"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": n}
                        ],
                    }
                }
                for n in range(4)
            ],
            id="local-codes-with-weights",
        ),
    ],
)
def test_the_answer_list_is_recognized_however_the_form_offers_it(options: list[dict[str, Any]] | None) -> None:
    if options is None:
        questions = [{"linkId": f"q{n}", "type": "choice", "answerValueSet": ANSWER_LIST} for n in range(1, 10)]
        resource = answers(POINTS)
    else:
        questions = [question(f"q{n}", options) for n in range(1, 10)]
        resource = answers(POINTS, lambda p: {"valueCoding": {"system": LOCAL, "code": f"a{p}"}})
    record = mapped(panel_form(questions=questions), resource)
    assert (record.total_score, record.risk_flags, record.score_reason) == (8, ["self_harm"], None)


def test_groups_displays_free_text_and_a_calculated_total_do_not_count_as_questions() -> None:
    questions = [
        {"linkId": "intro", "type": "display", "text": "Over the last 2 weeks..."},
        {"linkId": "g", "type": "group", "item": [question(f"q{n}") for n in range(1, 10)]},
        {"linkId": "sum", "type": "integer", "readOnly": True},
        {"linkId": "comments", "type": "text"},
    ]
    record = mapped(panel_form(questions=questions), answers(POINTS))
    assert (record.total_score, record.score_reason) == (8, None)


@pytest.mark.parametrize(
    "questions",
    [
        pytest.param([question(f"q{n}") for n in range(1, 9)], id="eight-questions"),
        pytest.param([question(f"q{n}") for n in range(1, 11)], id="ten-questions"),
        pytest.param(
            [*(question(f"q{n}") for n in range(1, 9)), question("q9", loinc_options()[:3])], id="a-shorter-list"
        ),
        pytest.param(
            [*(question(f"q{n}") for n in range(1, 9)), question("q9", [*loinc_options()[1:], loinc_options()[0]])],
            id="the-list-in-another-order",
        ),
        pytest.param(
            [
                question(f"q{n}", [{"valueCoding": {"system": LOCAL, "code": f"a{k}"}} for k in range(4)])
                for n in range(1, 10)
            ],
            id="local-codes-alone",
        ),
    ],
)
def test_a_panel_whose_questions_do_not_match_exactly_is_unrecognized_never_missing(
    questions: list[dict[str, Any]],
) -> None:
    record = mapped(panel_form(questions=questions), answers(POINTS[: len(questions)]))
    assert (record.instrument, record.total_score, record.score_reason) == ("phq-9", None, "unrecognized_items")
    assert record.unscored_items == list(PHQ9.item_codes)
    # Item 9 may be among the answers: a person must look, and the feed says so once.
    assert classify(None, record) == ["survey_response.completed", "risk.unscored"]
    assert (
        classify(record, mapped(panel_form(questions=questions), answers(POINTS[: len(questions)]), version="2")) == []
    )


def test_an_unrecognized_panel_is_raised_even_mid_form() -> None:
    questions = [question(f"q{n}") for n in range(1, 9)]
    record = mapped(panel_form(questions=questions), answers(POINTS[:3]) | {"status": "in-progress"})
    assert record.score_reason == "unrecognized_items"
    assert classify(None, record) == ["survey_response.updated", "risk.unscored"]


def test_the_tenants_item_map_recognizes_what_position_cannot() -> None:
    # Ten questions (a clinic's own extra one first) with local answer codes carrying weights.
    weighted = [
        {
            "valueCoding": {
                "system": LOCAL,
                "code": f"a{n}",
                "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": n}],
            }
        }
        for n in range(4)
    ]
    questions = [question("intro-q", weighted), *(question(f"x{n}", weighted) for n in range(1, 10))]
    resource = answers(POINTS, lambda p: {"valueCoding": {"system": LOCAL, "code": f"a{p}"}}, prefix="x")
    unmapped_record = mapped(panel_form(questions=questions), resource)
    assert unmapped_record.score_reason == "unrecognized_items"

    item_map = LocalCodes(items={CANONICAL: {f"x{n}": code for n, code in enumerate(PHQ9.item_codes, start=1)}})
    record = mapped(panel_form(questions=questions), resource, local_codes=item_map)
    assert (record.total_score, record.risk_flags, record.score_reason) == (8, ["self_harm"], None)
    # The map may name the form by id too, and its url may be versioned.
    by_id = LocalCodes(items={"Questionnaire/mood": item_map.items[CANONICAL]})
    assert mapped(panel_form(questions=questions), resource, local_codes=by_id).total_score == 8


def test_a_coded_form_with_a_skipped_question_is_missing_an_answer_not_unrecognized() -> None:
    coded_questions = [
        {"linkId": f"q{n}", "type": "choice", "code": [{"system": LOINC, "code": code}]}
        for n, code in enumerate(PHQ9.item_codes, start=1)
    ]
    questionnaire = panel_form(questions=[*coded_questions, question("comment-choice")])
    record = mapped(questionnaire, answers(POINTS[:8]))
    assert (record.score_reason, record.unscored_items) == ("missing_answers", [PHQ9.item_codes[8]])
    assert "risk.unscored" not in classify(None, record)


def test_a_form_holding_two_panels_in_groups_scores_each_by_position() -> None:
    questions = [
        {"linkId": "phq", "type": "group", "code": [{"system": LOINC, "code": "44249-1"}],
         "item": [question(f"p{n}") for n in range(1, 10)]},
        {"linkId": "gad", "type": "group", "code": [{"system": LOINC, "code": "69737-5"}],
         "item": [question(f"g{n}") for n in range(1, 8)]},
    ]  # fmt: skip
    questionnaire = panel_form(questions=questions)
    del questionnaire["code"]
    resource = response(
        [*((f"p{n}", coded(p)) for n, p in enumerate(POINTS, 1)), *((f"g{n}", coded(3)) for n in range(1, 8))]
    )
    record = mapped(questionnaire, resource)
    assert [(s.instrument, s.total_score, s.severity, s.risk_flags) for s in record.scores] == [
        ("phq-9", 8, "mild", ["self_harm"]),
        ("gad-7", 21, "severe", []),
    ]
    assert survey_to_platform(questionnaire, ctx()).instruments == ["phq-9", "gad-7"]


def test_a_form_holding_two_panels_without_groups_is_not_guessed_apart() -> None:
    questionnaire = panel_form(questions=[question(f"q{n}") for n in range(1, 17)])
    questionnaire["code"].append({"system": LOINC, "code": "69737-5"})
    record = mapped(questionnaire, answers([0] * 16))
    assert [(s.instrument, s.score_reason) for s in record.scores] == [
        ("phq-9", "unrecognized_items"),
        ("gad-7", "unrecognized_items"),
    ]
    assert classify(None, record)[-1] == "risk.unscored"


def test_a_gad7_coded_only_at_the_panel_is_scored_by_position() -> None:
    record = mapped(panel_form(GAD7), answers([3, 3, 2, 2, 1, 1, 0]))
    assert (record.instrument, record.total_score, record.severity) == ("gad-7", 12, "moderate")


def test_unrecognized_items_never_stop_a_recognized_risk_answer_from_flagging() -> None:
    # The response itself names item 9 by its LOINC definition; the rest cannot be placed.
    resource = answers(POINTS)
    resource["item"][8]["definition"] = f"http://loinc.org/fhir/DataElement/{PHQ9.item_codes[8]}"
    record = mapped(panel_form(questions=[question(f"q{n}") for n in range(1, 9)]), resource)
    assert record.risk_flags == ["self_harm"]
    assert record.score_reason == "unrecognized_items"
    assert classify(None, record) == ["survey_response.completed", "risk.flagged", "risk.unscored"]
