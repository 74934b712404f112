"""The scored instruments (PHQ-9, PHQ-2, GAD-7) as data: LOINC codes, answer scores, severity bands, risk items.

An instrument is recognized by LOINC code only (its panel, its total-score item or its question items), never by
linkId alone: linkIds are local to each EHR's form (``mappers.recognition`` maps a form's items to these codes).
Scores come from the LOINC answer codes of the "Not at all ... Nearly every day" list (LL358-3) or, for other
codes, from the ``ordinalValue`` / ``itemWeight`` extensions. A form may hold several instruments; each is scored.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from mappers.elements import MAPPING

LOINC: Final = "http://loinc.org"
# LOINC's OID (HL7's OID registry) is another spelling of the same code system.
LOINC_OID: Final = "urn:oid:2.16.840.1.113883.6.1"
LOINC_SYSTEMS: Final = frozenset({LOINC, LOINC_OID})

InstrumentKey = Literal["phq-9", "phq-2", "gad-7"]
Severity = Literal["minimal", "mild", "moderate", "moderately_severe", "severe", "negative", "positive"]
RiskFlag = Literal["self_harm"]
ScoreReason = Literal[
    "not_an_instrument",  # no recognized instrument in the form's codes
    "questionnaire_not_found",  # items carry no codes and the gateway does not hold the Questionnaire (yet)
    "not_completed",  # in-progress or stopped
    "entered_in_error",
    "unrecognized_items",  # the form is the instrument, but which of its items are the instrument's is unknown
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
# The answer list's value set, which a form may name instead of listing the options.
ANSWER_LIST: Final = "http://loinc.org/vs/LL358-3"

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
    # The scores of each item's answers, in the order the form lists them (LL358-3: 0 to 3).
    answer_scores: tuple[int, ...] = (0, 1, 2, 3)

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


def recognize_all(codes: Collection[str]) -> list[Instrument]:
    """Return every instrument a form holds, from the LOINC codes of the form and its items, the main one first.

    The main one is the instrument the form asks most questions of; on a tie, the earlier in ``INSTRUMENTS``.
    """
    present = set(codes)

    def asked(instrument: Instrument) -> int:
        return len(present.intersection(instrument.item_codes))

    # Evidence that names one instrument: its panel, its total, or a question no other instrument asks.
    found = [i for i in INSTRUMENTS if i.panel_codes & present or i.total_code in present or _own_items(i) & present]
    # Questions none of those asks are shared ones (PHQ-9's first two are PHQ-2): the instrument they complete best.
    rest = present - {code for i in found for code in i.item_codes}
    shared = [i for i in INSTRUMENTS if i not in found and rest.intersection(i.item_codes)]
    if shared:
        found.append(min(shared, key=lambda i: len(i.item_codes) - len(rest.intersection(i.item_codes))))
    return sorted(found, key=lambda i: (-asked(i), INSTRUMENTS.index(i)))


def recognize(codes: Collection[str]) -> Instrument | None:
    """Return the main instrument a form is (see ``recognize_all``), or None."""
    found = recognize_all(codes)
    return found[0] if found else None


def is_loinc(system: str | None) -> bool:
    """Tell whether codes of that system are LOINC codes (a code without a system is read as one)."""
    return system is None or system in LOINC_SYSTEMS


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
    if code is None or not is_loinc(system):
        return None
    return ANSWER_SCORES.get(code)


def weight_extension(element: object) -> Number | None:
    """Return the ordinalValue / itemWeight of an element (a Coding or an answerOption), or None."""
    if not isinstance(element, MAPPING):
        return None
    extensions = element.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, MAPPING) and extension.get("url") in WEIGHT_EXTENSIONS:
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


def risk_flags(
    weights: Mapping[str, Sequence[Number | None]], items: Mapping[str, RiskFlag] = RISK_ITEMS
) -> list[RiskFlag]:
    """Return the risk flags the answers raise (PHQ-9 item 9 above 0 is self-harm), whatever the total.

    ``items`` narrows the risk items to one instrument's (``Instrument.risk_items``).
    """
    flags: list[RiskFlag] = []
    for code, flag in items.items():
        if any(w is not None and w > 0 for w in weights.get(code, ())) and flag not in flags:
            flags.append(flag)
    return flags
