"""A QuestionnaireResponse's items read as flat answers, with the item code and score weight of each.

Answers are flattened in document order; each answer's ``path`` lists the linkIds of the items enclosing it,
outermost first. An answer's item code comes from its Questionnaire's item (``definitions``, by linkId), else from
the response item's own codes or its LOINC ``definition``; codes the tenant or vendor reads as LOINC count as LOINC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mappers import instruments
from mappers.answer import (
    MAX_DEPTH,
    VALUE_SUFFIXES,
    Answer,
    Value,
    ValueType,
    answer_weight,
    best_code,
    codings,
    defined_code,
    loinc_code,
    read_value,
)
from mappers.codes import LocalCodes
from mappers.elements import MAPPING, items, text
from mappers.instruments import Number
from mappers.model import Coding
from mappers.survey import SurveyItem, unread

# ``code`` is not R4 on a response item, but is read where an export put it.
ITEM_READ: Final = frozenset({"id", "linkId", "text", "answer", "item", "definition", "code"})
ANSWER_READ: Final = frozenset({"id", "item", *(f"value{suffix}" for suffix in VALUE_SUFFIXES)})


def may_score(answer: Answer) -> bool:
    """Tell whether an answer could be an instrument question's: a coded choice or a whole number."""
    return isinstance(answer.value, Coding) or answer.value_type == "integer"


class AnswerReader:
    """Flatten a response's items into answers, reading codes and weights from its Questionnaire."""

    def __init__(self, definitions: Mapping[str, SurveyItem], numbers_as_decimal: bool, codes: LocalCodes) -> None:
        self.definitions = definitions
        self.numbers_as_decimal = numbers_as_decimal
        self.local_codes = codes
        self.answers: list[Answer] = []
        self.codes: set[str] = set()
        self.unread: set[str] = set()

    def walk(self, value: object, path: list[str]) -> None:
        """Read the answers of these items (and of the items nested in them) below ``path``."""
        if len(path) >= MAX_DEPTH:
            return
        for item in items(value):
            if not isinstance(item, MAPPING):
                continue
            self.unread |= unread(item, ITEM_READ, "item.")
            link_id = text(item.get("linkId"))
            definition = self.definitions.get(link_id) if link_id is not None else None
            code = _item_code(item, definition, self.local_codes)
            self.codes.add(loinc_code(code) or "")
            question = text(item.get("text")) or (definition.text if definition else None)
            inner = [*path, link_id or ""]
            for element in items(item.get("answer")):
                if not isinstance(element, MAPPING):
                    continue
                self.unread |= unread(element, ANSWER_READ, "item.answer.")
                found = read_value(element, "value")
                if found is not None:
                    value_type, answer_value = self._declared(*found, definition)
                    self.answers.append(
                        Answer(
                            link_id=link_id,
                            path=path,
                            item_code=code,
                            question=question,
                            value_type=value_type,
                            value=answer_value,
                            weight=_weight(code, value_type, answer_value, element, definition, self.local_codes),
                        )
                    )
                self.walk(element.get("item"), inner)
            self.walk(item.get("item"), inner)

    def _declared(self, value_type: ValueType, value: Value, definition: SurveyItem | None) -> tuple[ValueType, Value]:
        # Epic sends integer answers as valueDecimal; a whole decimal is an integer unless the form asks a decimal.
        declared = definition.type if definition else "unknown"
        whole = value_type == "decimal" and isinstance(value, int) and not isinstance(value, bool)
        if whole and (declared == "integer" or (self.numbers_as_decimal and declared not in ("decimal", "quantity"))):
            return "integer", value
        return value_type, value


def _item_code(item: Mapping[str, Any], definition: SurveyItem | None, codes: LocalCodes) -> Coding | None:
    if definition is not None and definition.code is not None:
        return definition.code
    # Not R4 on a response item, but some exports copy the Questionnaire's codes there.
    own = best_code([codes.normalized(c) for c in codings(item.get("code"))])
    if own is not None:
        return own
    return defined_code(item.get("definition"))


def _weight(
    code: Coding | None,
    value_type: ValueType,
    value: Value,
    element: Mapping[str, Any],
    definition: SurveyItem | None,
    codes: LocalCodes,
) -> Number | None:
    if loinc_code(code) in instruments.ITEM_CODES and value_type in ("integer", "decimal"):
        return instruments.whole(value)
    if isinstance(value, str) and definition is not None:
        # An option offered as words ("Not at all") is chosen by its words.
        return next((o.weight for o in definition.answer_options if o.value == value), None)
    if not isinstance(value, Coding):
        return None
    # A local answer code the tenant reads as a LOINC answer scores as that answer.
    weight = answer_weight(code, codes.normalized(value), element)
    if weight is None and definition is not None:
        for option in definition.answer_options:
            chosen = option.value
            if (
                isinstance(chosen, Coding)
                and chosen.code == value.code
                and (chosen.system is None or value.system is None or chosen.system == value.system)
            ):
                return option.weight
    return weight
