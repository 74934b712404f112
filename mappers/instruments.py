"""The scored instruments (PHQ-9, PHQ-2, GAD-7) as data: LOINC codes, answer scores, severity bands, risk items.

An instrument is recognized by LOINC code only (its panel, its total-score item or its question items), never by
linkId: linkIds are local to each EHR's form. Scores come from the LOINC answer codes of the "Not at all ...
Nearly every day" list (LL358-3) or, for other codes, from the ``ordinalValue`` / ``itemWeight`` extensions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

LOINC: Final = "http://loinc.org"

InstrumentKey = Literal["phq-9", "phq-2", "gad-7"]
Severity = Literal["minimal", "mild", "moderate", "moderately_severe", "severe", "negative", "positive"]
RiskFlag = Literal["self_harm"]
ScoreReason = Literal[
    "not_an_instrument",  # no recognized instrument in the form's codes
    "questionnaire_not_found",  # items carry no codes and the gateway does not hold the Questionnaire (yet)
    "not_completed",  # in-progress or stopped
    "entered_in_error",
    "missing_answers",  # an instrument item has no answer
    "unscorable_answers",  # an instrument item's answer has no score in 0-3, or its answers disagree
]

# LOINC answer list LL358-3, shared by PHQ-9, PHQ-2 and GAD-7.
ANSWER_SCORES: Final[Mapping[str, int]] = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}
ANSWER_DISPLAYS: Final[Mapping[str, str]] = {
    "LA6568-5": "Not at all",
    "LA6569-3": "Several days",
    "LA6570-1": "More than half the days",
    "LA6571-9": "Nearly every day",
}
ANSWER_FOR_SCORE: Final[Mapping[int, str]] = {score: code for code, score in ANSWER_SCORES.items()}

ORDINAL_VALUE: Final = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
# The R5 extension pack's successor of ordinalValue, and the DSTU2-era one some forms still carry.
WEIGHT_EXTENSIONS: Final = (
    ORDINAL_VALUE,
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
    "http://hl7.org/fhir/StructureDefinition/iso21090-CO-value",
)

Number = int | float


@dataclass(frozen=True)
class Instrument:
    """One scored instrument: its LOINC codes, severity bands and the items that raise a risk flag."""

    key: InstrumentKey
    panel_codes: frozenset[str]
    item_codes: tuple[str, ...]
    total_code: str
    # (lowest total of the band, severity), ascending.
    bands: tuple[tuple[int, Severity], ...]
    # Item code -> the flag its answer raises when scored above 0, whatever the total.
    risk_items: Mapping[str, RiskFlag] = field(default_factory=dict)

    @property
    def max_score(self) -> int:
        """Return the highest total the instrument can give."""
        return 3 * len(self.item_codes)

    def severity(self, total: int) -> Severity:
        """Return the severity band of a total score."""
        found = self.bands[0][1]
        for low, band in self.bands:
            if total >= low:
                found = band
        return found


PHQ9_ITEM_9: Final = "44260-8"

PHQ9: Final = Instrument(
    key="phq-9",
    panel_codes=frozenset({"44249-1"}),
    item_codes=("44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", PHQ9_ITEM_9),
    total_code="44261-6",
    bands=((0, "minimal"), (5, "mild"), (10, "moderate"), (15, "moderately_severe"), (20, "severe")),
    risk_items={PHQ9_ITEM_9: "self_harm"},
)
GAD7: Final = Instrument(
    key="gad-7",
    panel_codes=frozenset({"69737-5"}),
    item_codes=("69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"),
    total_code="70274-6",
    bands=((0, "minimal"), (5, "mild"), (10, "moderate"), (15, "severe")),
)
PHQ2: Final = Instrument(
    key="phq-2",
    # 58120-7 is the CMS variant of the same two-item panel.
    panel_codes=frozenset({"55757-9", "58120-7"}),
    item_codes=("44250-9", "44255-8"),
    total_code="55758-7",
    bands=((0, "negative"), (3, "positive")),
)

# Order breaks ties: a form that is as much one instrument as another is read as the earlier one.
INSTRUMENTS: Final = (PHQ9, GAD7, PHQ2)
ITEM_CODES: Final = frozenset(code for i in INSTRUMENTS for code in i.item_codes)
TOTAL_CODES: Final = frozenset(i.total_code for i in INSTRUMENTS)
RISK_ITEMS: Final[Mapping[str, RiskFlag]] = {code: flag for i in INSTRUMENTS for code, flag in i.risk_items.items()}


def by_key(key: str) -> Instrument | None:
    """Return the instrument of that key ("phq-9"...), or None."""
    return next((i for i in INSTRUMENTS if i.key == key), None)


def _own_items(instrument: Instrument) -> frozenset[str]:
    others = {code for i in INSTRUMENTS if i is not instrument for code in i.item_codes}
    return frozenset(instrument.item_codes) - others


def recognize(codes: Collection[str]) -> Instrument | None:
    """Return the instrument a form is, from the LOINC codes of the form and its items, or None."""
    present = set(codes)
    # Evidence that names one instrument: its panel, its total, or a question no other instrument asks.
    candidates = [
        i for i in INSTRUMENTS if i.panel_codes & present or i.total_code in present or _own_items(i) & present
    ]
    if not candidates:
        # Only shared questions (PHQ-9's first two are PHQ-2): the instrument they complete best.
        candidates = [i for i in INSTRUMENTS if present.intersection(i.item_codes)]
    if not candidates:
        return None

    def rank(instrument: Instrument) -> tuple[int, int, int]:
        asked = len(present.intersection(instrument.item_codes))
        return (-asked, len(instrument.item_codes) - asked, INSTRUMENTS.index(instrument))

    return min(candidates, key=rank)


def whole(value: object) -> Number | None:
    """Return a finite number, as an int when it is whole (Epic sends integers as decimals), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def answer_score(system: str | None, code: str | None) -> int | None:
    """Return the score of a LOINC answer code of the instruments' answer list, or None."""
    if code is None or system not in (None, LOINC):
        return None
    return ANSWER_SCORES.get(code)


def weight_extension(element: object) -> Number | None:
    """Return the ordinalValue / itemWeight of an element (a Coding or an answerOption), or None."""
    if not isinstance(element, Mapping):
        return None
    extensions = element.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, Mapping) and extension.get("url") in WEIGHT_EXTENSIONS:
            for key in ("valueDecimal", "valueInteger"):
                found = whole(extension.get(key))
                if found is not None:
                    return found
    return None


@dataclass(frozen=True)
class Score:
    """An instrument's score of one response, or why there is none."""

    total: int | None
    severity: Severity | None
    reason: ScoreReason | None
    # The instrument's item codes left out of the total (unanswered, or answered without a usable score).
    unscored_items: tuple[str, ...] = ()


def score(instrument: Instrument, weights: Mapping[str, Sequence[Number | None]]) -> Score:
    """Score a response from the weights of its answers, by item code (None for an answer without a score)."""
    total = 0
    missing: list[str] = []
    unscorable: list[str] = []
    for code in instrument.item_codes:
        answered = weights.get(code, ())
        valid = {w for w in answered if isinstance(w, int) and 0 <= w <= 3}
        if not answered:
            missing.append(code)
        elif len(valid) != 1 or len(valid) != len(set(answered)):
            # A value outside 0-3, or two answers that disagree: no single score to add.
            unscorable.append(code)
        else:
            total += valid.pop()
    unscored = tuple(c for c in instrument.item_codes if c in missing or c in unscorable)
    if missing:
        return Score(None, None, "missing_answers", unscored)
    if unscorable:
        return Score(None, None, "unscorable_answers", unscored)
    return Score(total, instrument.severity(total), None)


def risk_flags(weights: Mapping[str, Sequence[Number | None]]) -> list[RiskFlag]:
    """Return the risk flags the answers raise (PHQ-9 item 9 above 0 is self-harm), whatever the total."""
    flags: list[RiskFlag] = []
    for code, flag in RISK_ITEMS.items():
        if any(w is not None and w > 0 for w in weights.get(code, ())) and flag not in flags:
            flags.append(flag)
    return flags
