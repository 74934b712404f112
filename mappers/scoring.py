"""The scores of a survey response: each instrument it holds, scored from its answers, and the risk flags raised.

A response may hold several instruments (a PHQ-9 and a GAD-7 in one form); each gets its own score, none is
dropped. The record's top-level score fields are its main instrument's (the one the form asks most of).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field

from mappers import instruments
from mappers.answer import Answer, Quantity, loinc_code
from mappers.instruments import Instrument, InstrumentKey, Number, RiskFlag, ScoreReason, Severity
from mappers.model import Part

SurveyResponseStatus = Literal["in_progress", "completed", "amended", "entered_in_error", "stopped", "unknown"]
FINISHED: Final = frozenset({"completed", "amended"})


class Scored(Part):
    """What a score says: the gateway's total and the EHR's, severity, risk flags, or why there is no total."""

    total_score: int | None = None
    # The EHR's own total item (PHQ-9 44261-6, GAD-7 70274-6, PHQ-2 55758-7), kept beside ours.
    ehr_total_score: int | float | None = None
    score_mismatch: bool = False
    severity: Severity | None = None
    # The flags raised: by an instrument's own risk items; on a response, by any answer.
    risk_flags: list[RiskFlag] = Field(default_factory=list)
    # Why total_score is null; with the instrument's items that could not be scored.
    score_reason: ScoreReason | None = None
    unscored_items: list[str] = Field(default_factory=list)


class InstrumentScore(Scored):
    """One instrument's score of a response."""

    instrument: InstrumentKey


@dataclass(frozen=True)
class Assessment:
    """What the gateway computes from a response's answers: a score per instrument, and every risk flag."""

    scores: tuple[InstrumentScore, ...] = ()
    # Every flag the answers raise, whether or not their instrument was recognized.
    risk_flags: tuple[RiskFlag, ...] = ()
    # Why nothing is scored, when no instrument is recognized.
    reason: ScoreReason | None = None

    def record_fields(self) -> dict[str, Any]:
        """Return the SurveyResponse fields: the main instrument's score at the top, every score in ``scores``."""
        main = self.scores[0] if self.scores else None
        scored: dict[str, Any] = (
            main.model_dump(include=set(Scored.model_fields)) if main else {"score_reason": self.reason}
        )
        # Every flag the answers raise, also those of an instrument the form is not mainly.
        scored["risk_flags"] = list(self.risk_flags)
        return scored | {"instrument": main.instrument if main else None, "scores": list(self.scores)}


def assess(
    answers: Sequence[Answer],
    status: SurveyResponseStatus,
    form_codes: Collection[str] = (),
    *,
    questionnaire_missing: bool = False,
    uncoded: bool = False,
) -> Assessment:
    """Recognize the instruments by LOINC code and score the answers; risk flags whatever the totals.

    ``form_codes`` are the LOINC codes of the form and of the questions it asks; ``uncoded`` says the form or the
    response has questions with no LOINC code, which may be an instrument's unrecognized items.
    """
    weights: dict[str, list[Number | None]] = {}
    for answer in answers:
        code = loinc_code(answer.item_code)
        if code is not None:
            weights.setdefault(code, []).append(answer.weight)
    found = instruments.recognize_all({c for c in (*form_codes, *weights) if c})
    if status == "entered_in_error":
        voided = tuple(InstrumentScore(instrument=i.key, score_reason="entered_in_error") for i in found)
        return Assessment(voided, reason="entered_in_error")
    # A patient who reports thoughts of self-harm is flagged even mid-form and even when nothing else scores.
    flags = tuple(instruments.risk_flags(weights))
    if not found:
        return Assessment(
            risk_flags=flags, reason="questionnaire_not_found" if questionnaire_missing else "not_an_instrument"
        )
    known = {*form_codes, *weights}
    scores = tuple(_score(i, answers, weights, status, known, uncoded) for i in found)
    return Assessment(scores, flags)


def _score(
    instrument: Instrument,
    answers: Sequence[Answer],
    weights: dict[str, list[Number | None]],
    status: SurveyResponseStatus,
    known: Collection[str],
    uncoded: bool,
) -> InstrumentScore:
    totals = [n for a in answers if loinc_code(a.item_code) == instrument.total_code and (n := _number(a)) is not None]
    base = InstrumentScore(
        instrument=instrument.key,
        ehr_total_score=totals[0] if totals else None,
        risk_flags=instruments.risk_flags(weights, instrument.risk_items),
    )
    # A question neither the form nor the answers name may be one the gateway could not tell apart: say so,
    # never "missing", so that a person looks at it (even mid-form: its risk item may be among them).
    unrecognized = [c for c in instrument.item_codes if c not in known] if uncoded else []
    if unrecognized:
        return base.model_copy(update={"score_reason": "unrecognized_items", "unscored_items": unrecognized})
    if status not in FINISHED:
        return base.model_copy(update={"score_reason": "not_completed"})
    scored = instruments.score(instrument, weights)
    return base.model_copy(
        update={
            "total_score": scored.total,
            "score_mismatch": scored.total is not None
            and base.ehr_total_score is not None
            and scored.total != base.ehr_total_score,
            "severity": scored.severity,
            "score_reason": scored.reason,
            "unscored_items": list(scored.unscored_items),
        }
    )


def _number(answer: Answer) -> Number | None:
    return instruments.whole(answer.value.value if isinstance(answer.value, Quantity) else answer.value)
