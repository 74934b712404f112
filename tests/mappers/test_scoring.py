"""A response holding several instruments gets a score per instrument; none is dropped, and a single-instrument
response reads as it always did, its one score also in ``scores``."""

from __future__ import annotations

from typing import Any

from mappers.instruments import GAD7, PHQ2, PHQ9, Instrument
from mappers.survey_response import classify, to_platform
from tests.mappers.conftest import ctx
from tests.mappers.test_survey_response import CANONICAL, LOINC, coded, held, response, scored


def combined_form(*parts: Instrument) -> dict[str, Any]:
    """Return one Questionnaire asking each instrument's questions by LOINC code (linkIds a1, a2... b1...)."""
    items = [
        {"linkId": f"{prefix}{n}", "type": "choice", "code": [{"system": LOINC, "code": code}]}
        for prefix, instrument in zip("abc", parts, strict=False)
        for n, code in enumerate(instrument.item_codes, start=1)
    ]
    return {"resourceType": "Questionnaire", "id": "intake", "url": CANONICAL, "status": "active", "item": items}


def combined_answers(*points: list[int]) -> dict[str, Any]:
    pairs = zip("abc", points, strict=False)
    return response([(f"{prefix}{n}", coded(p)) for prefix, each in pairs for n, p in enumerate(each, start=1)])


def test_a_phq9_and_a_gad7_in_one_response_are_both_scored() -> None:
    phq9, gad7 = [1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2]
    record = to_platform(combined_answers(phq9, gad7), ctx(related=held(combined_form(PHQ9, GAD7))))
    assert [(s.instrument, s.total_score, s.severity, s.risk_flags) for s in record.scores] == [
        ("phq-9", 9, "mild", ["self_harm"]),
        ("gad-7", 14, "moderate", []),
    ]
    # The top-level fields stay the main instrument's: the one the form asks most of.
    assert (record.instrument, record.total_score, record.severity, record.risk_flags) == (
        "phq-9",
        9,
        "mild",
        ["self_harm"],
    )
    assert classify(None, record) == ["survey_response.completed", "risk.flagged"]


def test_each_instrument_says_why_it_has_no_score() -> None:
    record = to_platform(combined_answers([0] * 9, [3, 3, 3]), ctx(related=held(combined_form(PHQ9, GAD7))))
    assert [(s.instrument, s.total_score, s.score_reason) for s in record.scores] == [
        ("phq-9", 0, None),
        ("gad-7", None, "missing_answers"),
    ]
    assert record.scores[1].unscored_items == list(GAD7.item_codes[3:])


def test_the_main_instrument_is_the_one_asked_most() -> None:
    record = to_platform(combined_answers([3] * 7, [1, 1]), ctx(related=held(combined_form(GAD7, PHQ2))))
    assert [s.instrument for s in record.scores] == ["gad-7", "phq-2"]
    assert (record.instrument, record.total_score, record.scores[1].total_score) == ("gad-7", 21, 2)


def test_a_single_instrument_reads_as_before_with_its_one_score_in_scores() -> None:
    record = scored(PHQ9, [0] * 8 + [2])
    assert (record.instrument, record.total_score, record.severity, record.risk_flags) == (
        "phq-9",
        2,
        "minimal",
        ["self_harm"],
    )
    (only,) = record.scores
    assert (only.instrument, only.total_score, only.severity, only.score_reason) == ("phq-9", 2, "minimal", None)


def test_a_response_entered_in_error_voids_every_score() -> None:
    resource = combined_answers([3] * 9, [3] * 7) | {"status": "entered-in-error"}
    record = to_platform(resource, ctx(related=held(combined_form(PHQ9, GAD7))))
    assert [(s.instrument, s.total_score, s.score_reason) for s in record.scores] == [
        ("phq-9", None, "entered_in_error"),
        ("gad-7", None, "entered_in_error"),
    ]
    assert (record.risk_flags, record.score_reason) == ([], "entered_in_error")
