"""A survey response's answers: typed values read from FHIR and written back, flat or as nested items.

An answer keeps the linkIds of the items enclosing it (``path``, outermost first); ``nest`` rebuilds the FHIR
item tree from that, so consecutive answers to one item share it (two repetitions of a repeating group come back
as one). Values keep their FHIR type in ``value_type`` beside them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import Field

from mappers import instruments
from mappers.elements import MAPPING, items, ref, text
from mappers.instruments import Number
from mappers.model import Coding, Part, Ref
from mappers.writer import present

# Deeper nesting than any real form; a cap keeps a hostile payload from exhausting the stack.
MAX_DEPTH: Final = 40
# An R4 response item has no code; its ``definition`` can name one as a LOINC data-element URL.
LOINC_DEFINITION: Final = "http://loinc.org/fhir/DataElement/{code}"
_LOINC_CODE: Final = re.compile(r"\d{1,8}-\d", re.ASCII)  # what ``_LOINC_URL`` reads back
_LOINC_URL: Final = re.compile(r"https?://(?:fhir\.)?loinc\.org/(?:[^?#]*/|[^?#]*#)?(\d{1,8}-\d)/?", re.ASCII)


class Quantity(Part):
    """A measured answer: value and unit."""

    value: int | float | None = None
    comparator: str | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class Attachment(Part):
    """An attached answer's metadata; its content stays in the stored FHIR version."""

    content_type: str | None = None
    url: str | None = None
    title: str | None = None
    size: int | None = None


ValueType = Literal[
    "boolean",
    "decimal",
    "integer",
    "date",
    "date_time",
    "time",
    "string",
    "uri",
    "coding",
    "quantity",
    "reference",
    "attachment",
]
# One typed value; ``value_type`` beside it says which of these it is.
Value = bool | int | float | str | Coding | Quantity | Ref | Attachment

# FHIR value[x] suffix -> value type. valueCode is not R4 for answers, but some forms send it for a Coding.
VALUE_SUFFIXES: Final[Mapping[str, ValueType]] = {
    "Boolean": "boolean",
    "Decimal": "decimal",
    "Integer": "integer",
    "Date": "date",
    "DateTime": "date_time",
    "Time": "time",
    "String": "string",
    "Uri": "uri",
    "Coding": "coding",
    "Quantity": "quantity",
    "Reference": "reference",
    "Attachment": "attachment",
    "Code": "coding",
}


class Answer(Part):
    """One answer of a response: the item it answers, its typed value and its score weight when it has one."""

    link_id: str | None
    path: list[str] = Field(default_factory=list)
    item_code: Coding | None = None
    question: str | None = None
    value_type: ValueType
    value: Value
    weight: int | float | None = None


def read_value(element: Mapping[str, Any], prefix: str) -> tuple[ValueType, Value] | None:
    """Read the first usable ``<prefix>[x]`` of an element (``valueCoding``, ``answerInteger``...)."""
    for suffix, value_type in VALUE_SUFFIXES.items():
        raw = element.get(prefix + suffix)
        if raw is None:
            continue
        value = _typed(value_type, suffix, raw)
        if value is not None:
            return value_type, value
    return None


def _typed(value_type: ValueType, suffix: str, raw: object) -> Value | None:
    if value_type == "boolean":
        return raw if isinstance(raw, bool) else None
    if value_type in ("decimal", "integer"):
        number = instruments.whole(raw)
        return number if value_type == "decimal" or isinstance(number, int) else None
    if value_type == "coding":
        if suffix == "Code":
            code = text(raw)
            return Coding(code=code) if code else None
        found = codings(raw)
        return found[0] if found else None
    if value_type == "quantity":
        return _quantity(raw)
    if value_type == "reference":
        return ref(raw)
    if value_type == "attachment":
        return _attachment(raw)
    return text(raw)


def _quantity(raw: object) -> Quantity | None:
    if not isinstance(raw, MAPPING):
        return None
    quantity = Quantity(
        value=instruments.whole(raw.get("value")),
        comparator=text(raw.get("comparator")),
        unit=text(raw.get("unit")),
        system=text(raw.get("system")),
        code=text(raw.get("code")),
    )
    return quantity if quantity != Quantity() else None


def _attachment(raw: object) -> Attachment | None:
    if not isinstance(raw, MAPPING):
        return None
    size = raw.get("size")
    attachment = Attachment(
        content_type=text(raw.get("contentType")),
        url=text(raw.get("url")),
        title=text(raw.get("title")),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )
    return attachment if attachment != Attachment() else None


_SUFFIX_OF: Final[Mapping[ValueType, str]] = {
    value_type: suffix for suffix, value_type in VALUE_SUFFIXES.items() if suffix != "Code"
}


def write_value(value_type: ValueType, value: Value, prefix: str = "value") -> dict[str, Any]:
    """Write a typed value back as FHIR ``<prefix>[x]`` (the inverse of ``read_value``)."""
    key = prefix + _SUFFIX_OF[value_type]
    if isinstance(value, Coding | Quantity | Ref):
        return {key: present(value.model_dump())}
    if isinstance(value, Attachment):
        fields = {"contentType": value.content_type, "url": value.url, "title": value.title, "size": value.size}
        return {key: {k: v for k, v in fields.items() if v is not None}}
    return {key: value}


def codings(value: object) -> list[Coding]:
    """Return the Codings of a Coding array (a lone Coding counts as one) that say something."""
    found = [
        Coding(system=text(c.get("system")), code=text(c.get("code")), display=text(c.get("display")))
        for c in items(value)
        if isinstance(c, MAPPING)
    ]
    return [c for c in found if c.system or c.code or c.display]


def defined_code(definition: object) -> Coding | None:
    """Return the LOINC code a response item's ``definition`` URL names, or None."""
    found = text(definition)
    match = _LOINC_URL.fullmatch(found) if found else None
    return Coding(system=instruments.LOINC, code=match.group(1)) if match else None


def loinc_code(coding: Coding | None) -> str | None:
    """Return the code of a LOINC coding (or of a coding without a system), else None."""
    if coding is None or not instruments.is_loinc(coding.system):
        return None
    return coding.code


def best_code(found: list[Coding]) -> Coding | None:
    """Return the LOINC coding of a list when there is one, else the first coding with a code."""
    coded = [c for c in found if c.code]
    return next((c for c in coded if c.system in instruments.LOINC_SYSTEMS), coded[0] if coded else None)


def answer_weight(item_code: Coding | None, value: Value, element: Mapping[str, Any]) -> Number | None:
    """Return the score weight of a coded answer: the instrument's for its own items, else the extension's."""
    if not isinstance(value, Coding):
        return None
    if loinc_code(item_code) in instruments.ITEM_CODES:
        scored = instruments.answer_score(value.system, value.code)
        if scored is not None:
            return scored
    # The R4 core extension sits on the Coding; SDC forms also put it on the answerOption itself.
    own = instruments.weight_extension(element.get("valueCoding"))
    return own if own is not None else instruments.weight_extension(element)


def nest(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """Return the nested FHIR items of flattened answers (consecutive answers of one item share it)."""
    top: list[dict[str, Any]] = []
    chain: list[dict[str, Any]] = []  # the open item at each depth

    def children(depth: int) -> list[dict[str, Any]]:
        if depth == 0:
            return top
        parent = chain[depth - 1]
        # A question's sub-items sit under its (last) answer; a group's under the group.
        holder = parent["answer"][-1] if parent.get("answer") else parent
        found: list[dict[str, Any]] = holder.setdefault("item", [])
        return found

    def open_item(depth: int, link_id: str | None) -> dict[str, Any]:
        if len(chain) > depth and chain[depth].get("linkId", None) == link_id:
            del chain[depth + 1 :]
            return chain[depth]
        del chain[depth:]
        node: dict[str, Any] = {"linkId": link_id} if link_id is not None else {}
        children(depth).append(node)
        chain.append(node)
        return node

    for answer in answers:
        for depth, link_id in enumerate(answer.path):
            open_item(depth, link_id)
        node = open_item(len(answer.path), answer.link_id)
        if "linkId" not in node:
            node["linkId"] = ""
        code = loinc_code(answer.item_code)
        if code is not None and _LOINC_CODE.fullmatch(code):
            node.setdefault("definition", LOINC_DEFINITION.format(code=code))
        if answer.question is not None:
            node.setdefault("text", answer.question)
        node.setdefault("answer", []).append(_answer(answer))
        if "item" in node:
            # Its sub-items were answered first, so they were opened beside it: R4 (qrs-1) puts a question's
            # sub-items under its answer, never beside it.
            node["answer"][-1].setdefault("item", []).extend(node.pop("item"))
    return top


def _answer(answer: Answer) -> dict[str, Any]:
    value_type, value = answer.value_type, answer.value
    if not isinstance(value, Coding):
        return write_value(value_type, value)
    coding = value
    if loinc_code(answer.item_code) in instruments.ITEM_CODES:
        # The instrument's own answer codes, so the EHR scores what the patient chose.
        if coding.code is None and isinstance(answer.weight, int) and answer.weight in instruments.ANSWER_FOR_SCORE:
            la = instruments.ANSWER_FOR_SCORE[answer.weight]
            coding = Coding(
                system=instruments.LOINC, code=la, display=coding.display or instruments.ANSWER_DISPLAYS[la]
            )
        elif coding.system is None and coding.code in instruments.ANSWER_SCORES:
            coding = coding.model_copy(update={"system": instruments.LOINC})
    written = write_value("coding", coding)
    implied = answer_weight(answer.item_code, coding, written)
    if answer.weight is not None and implied != answer.weight:
        written["valueCoding"]["extension"] = [{"url": instruments.ORDINAL_VALUE, "valueDecimal": answer.weight}]
    return written
