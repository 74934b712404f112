"""The instruments as data: recognition by LOINC code, scoring, severity bands and risk flags."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers import instruments
from mappers.instruments import GAD7, PHQ2, PHQ9, recognize, recognize_all, risk_flags, score


def test_the_instruments_carry_the_published_loinc_codes() -> None:
    assert (PHQ9.panel_codes, PHQ9.total_code, PHQ9.max_score) == ({"44249-1"}, "44261-6", 27)
    assert (GAD7.panel_codes, GAD7.total_code, GAD7.max_score) == ({"69737-5"}, "70274-6", 21)
    assert ("55757-9" in PHQ2.panel_codes, PHQ2.total_code, PHQ2.max_score) == (True, "55758-7", 6)
    # PHQ-2 is the first two questions of PHQ-9; item 9 is the self-harm question.
    assert PHQ2.item_codes == PHQ9.item_codes[:2]
    assert PHQ9.item_codes[8] == instruments.PHQ9_ITEM_9 == "44260-8"
    assert len(set(GAD7.item_codes)) == 7 and not set(GAD7.item_codes) & set(PHQ9.item_codes)


@pytest.mark.parametrize(("code", "points"), [("LA6568-5", 0), ("LA6569-3", 1), ("LA6570-1", 2), ("LA6571-9", 3)])
def test_loinc_answer_codes_score_zero_to_three(code: str, points: int) -> None:
    assert instruments.answer_score("http://loinc.org", code) == points
    assert instruments.answer_score(None, code) == points
    # The same code in another system is not LOINC's answer.
    assert instruments.answer_score("http://example.org/answers", code) is None


@pytest.mark.parametrize(
    ("instrument", "total", "severity"),
    [
        (PHQ9, 0, "minimal"),
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
        (PHQ2, 0, "negative"),
        (PHQ2, 2, "negative"),
        (PHQ2, 3, "positive"),
        (PHQ2, 6, "positive"),
    ],
)
def test_severity_bands_at_every_edge(instrument: instruments.Instrument, total: int, severity: str) -> None:
    assert instrument.severity(total) == severity


def test_recognized_by_panel_total_or_own_questions() -> None:
    assert recognize({"44249-1"}) is PHQ9
    assert recognize({"69737-5"}) is GAD7
    assert recognize({"55757-9"}) is PHQ2
    assert recognize({"44261-6"}) is PHQ9
    assert recognize({"55758-7", "44250-9", "44255-8"}) is PHQ2
    assert recognize({"44260-8"}) is PHQ9
    assert recognize({"69734-2"}) is GAD7
    assert recognize({"72166-2", "68518-0"}) is None  # AUDIT-C is not scored here
    assert recognize(set()) is None


def test_the_two_shared_questions_alone_are_a_phq2_and_with_more_a_phq9() -> None:
    assert recognize({"44250-9", "44255-8"}) is PHQ2
    assert recognize({"44250-9"}) is PHQ2
    assert recognize({"44250-9", "44255-8", "44259-0"}) is PHQ9
    # A PHQ-9 panel asking (so far) only its first two questions is still a PHQ-9.
    assert recognize({"44249-1", "44250-9", "44255-8"}) is PHQ9


def test_a_combined_form_is_read_as_the_instrument_it_asks_most_of() -> None:
    assert recognize({"44249-1", "69737-5", *PHQ9.item_codes, *GAD7.item_codes}) is PHQ9
    assert recognize({"44249-1", "69737-5", *GAD7.item_codes, "44250-9"}) is GAD7


def test_every_instrument_a_form_holds_is_recognized_the_main_one_first() -> None:
    assert recognize_all({"44249-1", "69737-5"}) == [PHQ9, GAD7]
    assert recognize_all({*GAD7.item_codes, *PHQ9.item_codes}) == [PHQ9, GAD7]
    # PHQ-2's questions inside a PHQ-9 are the PHQ-9's; beside a GAD-7 they are a PHQ-2 of their own.
    assert recognize_all(set(PHQ9.item_codes)) == [PHQ9]
    assert recognize_all({*GAD7.item_codes, *PHQ2.item_codes}) == [GAD7, PHQ2]
    assert recognize_all({"72166-2"}) == []


def weights_for(instrument: instruments.Instrument, points: list[int]) -> dict[str, list[int | float | None]]:
    return {code: [p] for code, p in zip(instrument.item_codes, points, strict=True)}


def every_item_answered(instrument: instruments.Instrument) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, 3), min_size=len(instrument.item_codes), max_size=len(instrument.item_codes))


@given(st.sampled_from([PHQ9, GAD7, PHQ2]).flatmap(lambda i: st.tuples(st.just(i), every_item_answered(i))))
def test_the_total_is_the_sum_of_the_item_scores(case: tuple[instruments.Instrument, list[int]]) -> None:
    instrument, points = case
    result = score(instrument, weights_for(instrument, points))
    assert result.total == sum(points)
    assert result.severity == instrument.severity(sum(points))
    assert result.reason is None and result.unscored_items == ()


def test_an_unanswered_item_leaves_the_total_unscored_with_the_reason() -> None:
    weights = weights_for(PHQ9, [1] * 9)
    del weights["44252-5"]
    result = score(PHQ9, weights)
    assert (result.total, result.severity, result.reason) == (None, None, "missing_answers")
    assert result.unscored_items == ("44252-5",)


@pytest.mark.parametrize("bad", [[4], [None], [1.5], [-1], [1, 2]])
def test_an_answer_without_a_score_of_zero_to_three_is_not_summed(bad: list[int | float | None]) -> None:
    weights = weights_for(GAD7, [0] * 7) | {"69734-2": bad}
    result = score(GAD7, weights)
    assert (result.total, result.reason, result.unscored_items) == (None, "unscorable_answers", ("69734-2",))


def test_the_same_answer_given_twice_still_scores() -> None:
    assert score(PHQ2, {"44250-9": [2, 2], "44255-8": [1]}).total == 3


def test_item_nine_above_zero_flags_self_harm_whatever_else() -> None:
    assert risk_flags({"44260-8": [1]}) == ["self_harm"]
    assert risk_flags({"44260-8": [0]}) == []
    assert risk_flags({"44260-8": [None, 2]}) == ["self_harm"]
    assert risk_flags({"44250-9": [3], "44255-8": [3]}) == []


def test_whole_decimals_are_integers_and_odd_numbers_are_not_numbers() -> None:
    assert instruments.whole(2.0) == 2 and isinstance(instruments.whole(2.0), int)
    assert instruments.whole(2.5) == 2.5
    assert instruments.whole(True) is None
    assert instruments.whole(float("nan")) is None
    assert instruments.whole("2") is None


def test_weight_extensions_are_read_from_either_url() -> None:
    ordinal = {"extension": [{"url": instruments.ORDINAL_VALUE, "valueDecimal": 4.0}]}
    item_weight = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": 0.5}]}
    assert instruments.weight_extension(ordinal) == 4
    assert instruments.weight_extension(item_weight) == 0.5
    assert instruments.weight_extension({"extension": [{"url": "other", "valueDecimal": 1}]}) is None
    assert instruments.weight_extension({"extension": "nonsense"}) is None
