"""FHIR R4 Questionnaire to the platform's Survey record, and the change a new version makes.

Nested items are flattened in document order; each item's ``path`` lists the linkIds of the items that enclose
it, outermost first (linkIds are unique within a Questionnaire, so the path rebuilds the tree). A survey is an
``instrument`` ("phq-9", "phq-2", "gad-7") when its LOINC codes say so, never because of its linkIds; codes the
tenant or its vendor reads as LOINC (``ctx.codes()``) count as LOINC codes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import Field

from mappers import instruments
from mappers.answer import (
    MAX_DEPTH,
    VALUE_SUFFIXES,
    Value,
    ValueType,
    answer_weight,
    best_code,
    codings,
    loinc_code,
    read_value,
)
from mappers.codes import NO_CODES, LocalCodes
from mappers.context import MapContext
from mappers.elements import MAPPING, identifiers, instant, items, security_labels, text
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.instruments import InstrumentKey
from mappers.model import Coding, Part, Record

FHIR_TYPE: Final = "Questionnaire"


ItemType = Literal[
    "group",
    "display",
    "question",
    "boolean",
    "decimal",
    "integer",
    "date",
    "date_time",
    "time",
    "string",
    "text",
    "url",
    "choice",
    "open_choice",
    "attachment",
    "reference",
    "quantity",
    "unknown",
]
_ITEM_TYPES: Final[Mapping[str, ItemType]] = {
    "group": "group",
    "display": "display",
    "question": "question",  # STU3's abstract type, still seen in converted forms
    "boolean": "boolean",
    "decimal": "decimal",
    "integer": "integer",
    "date": "date",
    "dateTime": "date_time",
    "time": "time",
    "string": "string",
    "text": "text",
    "url": "url",
    "choice": "choice",
    "open-choice": "open_choice",
    "attachment": "attachment",
    "reference": "reference",
    "quantity": "quantity",
}

SurveyStatus = Literal["draft", "active", "retired", "unknown"]
_STATUS: Final[Mapping[str, SurveyStatus]] = {"draft": "draft", "active": "active", "retired": "retired"}
_BEHAVIOR: Final[Mapping[str, Literal["all", "any"]]] = {"all": "all", "any": "any"}


class AnswerOption(Part):
    """One permitted answer of a choice item, with its score weight when the form or the instrument gives one."""

    value_type: ValueType
    value: Value
    weight: int | float | None = None
    initial_selected: bool = False


class EnableWhen(Part):
    """A condition on another item's answer that shows this item."""

    question: str | None = None
    operator: str | None = None
    value_type: ValueType | None = None
    value: Value | None = None


class SurveyItem(Part):
    """One item of a survey; ``path`` holds the linkIds of the items enclosing it, outermost first."""

    link_id: str | None
    path: list[str] = Field(default_factory=list)
    # The item's LOINC code when it has one, else its first code.
    code: Coding | None = None
    type: ItemType = "unknown"
    text: str | None = None
    prefix: str | None = None
    required: bool = False
    repeats: bool = False
    read_only: bool = False
    answer_value_set: str | None = None
    answer_options: list[AnswerOption] = Field(default_factory=list)
    enable_when: list[EnableWhen] = Field(default_factory=list)
    enable_behavior: Literal["all", "any"] | None = None


class Survey(Record):
    """A form the platform can send or read responses of, with its instrument when it is a scored one."""

    record_type: Literal["survey"] = "survey"
    url: str | None = None
    version: str | None = None
    name: str | None = None
    title: str | None = None
    status: SurveyStatus = "unknown"
    date: str | None = None
    description: str | None = None
    codes: list[Coding] = Field(default_factory=list)
    subject_type: list[str] = Field(default_factory=list)
    # The main instrument the form is, and every instrument it holds (the main one first).
    instrument: InstrumentKey | None = None
    instruments: list[InstrumentKey] = Field(default_factory=list)
    items: list[SurveyItem] = Field(default_factory=list)
    # Element paths of the Questionnaire the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Survey:
    """Map a FHIR R4 Questionnaire, parsed from JSON, to the platform's Survey record."""
    fhir_id = resource_id(resource, FHIR_TYPE)
    local = ctx.codes()
    survey_items = items_of(resource, local)
    codes = codings(resource.get("code"))
    held = instruments_of(resource, survey_items, local)
    return Survey(
        id=fhir_id,
        url=text(resource.get("url")),
        version=text(resource.get("version")),
        name=text(resource.get("name")),
        title=text(resource.get("title")),
        status=_STATUS.get(text(resource.get("status")) or "", "unknown"),
        date=text(resource.get("date")),
        description=text(resource.get("description")),
        codes=codes,
        subject_type=_words(resource.get("subjectType")),
        instrument=held[0] if held else None,
        instruments=held,
        items=survey_items,
        unmapped=_unmapped(resource),
        security=security_labels(resource),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def _words(value: object) -> list[str]:
    # A lone code where R4 wants an array is a common slip; read it as one.
    found = [value] if isinstance(value, str) else list(items(value))
    return [t for t in map(text, found) if t is not None]


def classify(previous: Survey | None, current: Survey) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    if current.deleted:
        return ["survey.deleted"] if previous is not None and not previous.deleted else []
    first = previous is None or previous.deleted
    if current.status == "active" and (first or previous is None or previous.status != "active"):
        return ["survey.published"]
    if first or previous is None or visibly_changed(previous, current):
        return ["survey.updated"]
    return []


def index_fields(survey: Survey) -> IndexFields:
    """Return the fields the platform API filters and sorts surveys by (sorted by their date)."""
    return {"patient": None, "sort": date_epoch(survey.date), "status": survey.status}


def date_epoch(value: str | None) -> float | None:
    """Return the epoch seconds of a FHIR date or dateTime (a bare date is its midnight UTC), or None."""
    moment = instant(value, "UTC")
    if moment is not None:
        return moment.timestamp()
    try:
        day = datetime.strptime((value or "")[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day.timestamp()


def instruments_of(
    resource: Mapping[str, Any], survey_items: list[SurveyItem], codes: LocalCodes = NO_CODES
) -> list[InstrumentKey]:
    """Return the instruments a Questionnaire holds, the main one first, from its own and its items' LOINC codes."""
    found = {codes.loinc_of(c) for c in codings(resource.get("code"))} | {loinc_code(i.code) for i in survey_items}
    return [instrument.key for instrument in instruments.recognize_all({c for c in found if c})]


# What this mapper reads; the narrative only renders the rest. Everything else is listed in ``unmapped``.
_READ: Final = frozenset(
    {"resourceType", "id", "meta", "text", "identifier", "url", "version", "name", "title", "status", "date"}
    | {"description", "code", "subjectType", "item"}
)
_ITEM_READ: Final = frozenset(
    {"id", "linkId", "code", "type", "text", "prefix", "required", "repeats", "readOnly", "answerValueSet"}
    | {"answerOption", "enableWhen", "enableBehavior", "item"}
)
_OPTION_READ: Final = frozenset({"id", "initialSelected", *(f"value{suffix}" for suffix in VALUE_SUFFIXES)})
_ENABLE_WHEN_READ: Final = frozenset({"id", "question", "operator", *(f"answer{suffix}" for suffix in VALUE_SUFFIXES)})


# The extensions every survey mapper reads: an answer's score weight.
WEIGHT_READ: Final = frozenset(instruments.WEIGHT_EXTENSIONS)


def unread(element: object, known: Collection[str], prefix: str = "") -> set[str]:
    """Return the paths of an element's children a mapper did not read (extensions named by URL)."""
    paths: set[str] = set()
    if not isinstance(element, MAPPING):
        return paths
    for key, value in element.items():
        if key in ("extension", "modifierExtension"):
            paths |= {
                f"{prefix}{key}('{e.get('url')}')"
                for e in items(value)
                if isinstance(e, MAPPING) and (key == "modifierExtension" or e.get("url") not in WEIGHT_READ)
            }
        elif key not in known:
            paths.add(f"{prefix}{key}")
    return paths


def _unmapped(resource: Mapping[str, Any]) -> list[str]:
    paths = unread(resource, _READ)
    for item in _every_item(resource.get("item"), 0):
        paths |= unread(item, _ITEM_READ, "item.")
        for option in items(item.get("answerOption")):
            paths |= unread(option, _OPTION_READ, "item.answerOption.")
        for condition in items(item.get("enableWhen")):
            paths |= unread(condition, _ENABLE_WHEN_READ, "item.enableWhen.")
    return sorted(paths)


def _every_item(value: object, depth: int) -> Iterator[Mapping[str, Any]]:
    if depth >= MAX_DEPTH:
        return
    for item in items(value):
        if isinstance(item, MAPPING):
            yield item
            yield from _every_item(item.get("item"), depth + 1)


def items_of(questionnaire: Mapping[str, Any], codes: LocalCodes = NO_CODES) -> list[SurveyItem]:
    """Return a Questionnaire's items flattened in document order, each with its enclosing linkIds.

    An item's code is its LOINC one, where it has one or ``codes`` reads one of its codes as LOINC.
    """
    return list(_walk(questionnaire.get("item"), [], codes))


def _walk(value: object, path: list[str], codes: LocalCodes) -> Iterator[SurveyItem]:
    if len(path) >= MAX_DEPTH:
        return
    for item in items(value):
        if not isinstance(item, MAPPING):
            continue
        survey_item = _item(item, path, codes)
        yield survey_item
        yield from _walk(item.get("item"), [*path, survey_item.link_id or ""], codes)


def _item(item: Mapping[str, Any], path: list[str], codes: LocalCodes) -> SurveyItem:
    code = best_code([codes.normalized(c) for c in codings(item.get("code"))])
    return SurveyItem(
        link_id=text(item.get("linkId")),
        path=path,
        code=code,
        type=_ITEM_TYPES.get(text(item.get("type")) or "", "unknown"),
        text=text(item.get("text")),
        prefix=text(item.get("prefix")),
        required=item.get("required") is True,
        repeats=item.get("repeats") is True,
        read_only=item.get("readOnly") is True,
        answer_value_set=text(item.get("answerValueSet")),
        answer_options=[o for o in (_option(each, code, codes) for each in items(item.get("answerOption"))) if o],
        enable_when=[e for e in map(_enable_when, items(item.get("enableWhen"))) if e],
        enable_behavior=_BEHAVIOR.get(text(item.get("enableBehavior")) or ""),
    )


def _option(option: object, item_code: Coding | None, codes: LocalCodes) -> AnswerOption | None:
    if not isinstance(option, MAPPING):
        return None
    found = read_value(option, "value")
    if found is None:
        return None
    value_type, value = found
    return AnswerOption(
        value_type=value_type,
        value=value,
        # A local answer code the tenant reads as a LOINC answer scores as that answer.
        weight=answer_weight(item_code, codes.normalized(value) if isinstance(value, Coding) else value, option),
        initial_selected=option.get("initialSelected") is True,
    )


def _enable_when(condition: object) -> EnableWhen | None:
    if not isinstance(condition, MAPPING):
        return None
    found = read_value(condition, "answer")
    return EnableWhen(
        question=text(condition.get("question")),
        operator=text(condition.get("operator")),
        value_type=found[0] if found else None,
        value=found[1] if found else None,
    )


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="survey",
    route="surveys",
    model=Survey,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _READ,
)
