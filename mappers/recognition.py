"""Which instrument question each item of a form is, also for a form that codes only its panel.

An item is an instrument's question when its LOINC code says so: its own code, or a local code the tenant's or
the vendor's ``LocalCodes`` reads as LOINC. A form coded only at the panel (its ``code``, or a group item's code,
names the instrument) has its questions recognized by the tenant's item map (linkId -> LOINC), else by position:
when the panel's questions are exactly as many as the instrument's and each offers exactly the instrument's
answer list in order (by LOINC answer code, score weight or the list's own words), the n-th question is the
instrument's n-th. Otherwise they stay unrecognized, and the response says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from mappers import instruments
from mappers.answer import codings, loinc_code
from mappers.codes import LocalCodes
from mappers.elements import text
from mappers.instruments import Instrument, Number
from mappers.model import Coding
from mappers.survey import AnswerOption, SurveyItem

# The item types an instrument's question can have ("question" is STU3's, "unknown" an item without a type).
_SCORED_TYPES: Final = frozenset({"choice", "open_choice", "question", "integer", "decimal", "unknown"})
# The list's own words, for options coded locally without a score.
_SCORE_OF_WORDS: Final = {
    words.casefold(): instruments.ANSWER_SCORES[code] for code, words in instruments.ANSWER_DISPLAYS.items()
}


def recognized(form: Mapping[str, Any], survey_items: Sequence[SurveyItem], codes: LocalCodes) -> list[SurveyItem]:
    """Return a form's items, each with the instrument question's LOINC code it is recognized as, if any."""
    item_map = codes.item_map(text(form.get("url")), text(form.get("id")))
    found = [_as(item, item_map[item.link_id], codes) if item.link_id in item_map else item for item in survey_items]
    panels = _panels(form, found, codes)
    for instrument, group in panels:
        others = {g for i, g in panels if i is not instrument and g is not None}
        asked = [n for n, item in enumerate(found) if _asks(item, instrument, group, others)]
        if any(loinc_code(found[n].code) in instrument.item_codes for n in asked):
            continue  # the form codes its questions: each is what its code says
        if len(asked) == len(instrument.item_codes) and all(
            _answer_scores(found[n], codes) == instrument.answer_scores for n in asked
        ):
            for n, code in zip(asked, instrument.item_codes, strict=True):
                found[n] = _as(found[n], code, codes)
    return found


def scored_question(item: SurveyItem) -> bool:
    """Tell whether an item could be an instrument's question: one a patient answers with a choice or a number.

    Groups, display texts, calculated (read-only) items and free-text, date or yes/no questions never are.
    """
    return item.type in _SCORED_TYPES and not item.read_only


def _panels(
    form: Mapping[str, Any], found: Sequence[SurveyItem], codes: LocalCodes
) -> list[tuple[Instrument, str | None]]:
    """Return (instrument, the linkId of the group coded as its panel, or None for the whole form)."""
    panels: list[tuple[Instrument, str | None]] = []
    own = {codes.loinc_of(c) for c in codings(form.get("code"))}
    for instrument in instruments.INSTRUMENTS:
        if instrument.panel_codes & own:
            panels.append((instrument, None))
        panels += [
            (instrument, item.link_id)
            for item in found
            if item.type == "group" and item.link_id and loinc_code(item.code) in instrument.panel_codes
        ]
    return panels


def _asks(item: SurveyItem, instrument: Instrument, group: str | None, others: set[str]) -> bool:
    """Tell whether an item is a question of the panel (the group, or the form outside other panels' groups)."""
    inside = group in item.path if group is not None else not others.intersection(item.path)
    return inside and scored_question(item) and loinc_code(item.code) != instrument.total_code


def _answer_scores(item: SurveyItem, codes: LocalCodes) -> tuple[Number | None, ...]:
    """Return the score of each answer an item offers, in order (those of its named list when it names one)."""
    if not item.answer_options:
        named = (item.answer_value_set or "").partition("|")[0]
        return (0, 1, 2, 3) if named == instruments.ANSWER_LIST else ()
    return tuple(_option_score(option, codes) for option in item.answer_options)


def _option_score(option: AnswerOption, codes: LocalCodes) -> Number | None:
    value = option.value
    if isinstance(value, Coding):
        normalized = codes.normalized(value)
        scored = instruments.answer_score(normalized.system, normalized.code)
        if scored is not None:
            return scored
        if option.weight is not None:
            return option.weight
        return _SCORE_OF_WORDS.get((value.display or "").strip().casefold())
    if isinstance(value, str):
        return _SCORE_OF_WORDS.get(value.strip().casefold())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _as(item: SurveyItem, code: str, codes: LocalCodes) -> SurveyItem:
    """Return the item recognized as the question ``code``, its answers scored as that question's."""
    coding = Coding(system=instruments.LOINC, code=code, display=item.code.display if item.code else None)
    options = item.answer_options
    if code in instruments.ITEM_CODES:
        options = [o.model_copy(update={"weight": _option_score(o, codes)}) for o in options]
    return item.model_copy(update={"code": coding, "answer_options": options})
