"""The answers of a QuestionnaireResponse item, checked against the item: the value type its type allows, its
answerOptions or answerValueSet, and the limits the item's extensions set (minValue, maxValue, minLength, regex,
maxDecimalPlaces, min and max quantities with UCUM units, unit options and value sets, mime types, maximum sizes
and the resource types a reference may name).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from conformance.definitions import as_list
from conformance.engine import Run
from conformance.primitive import moment
from conformance.support import Support
from conformance.terminology import contains, expansion, wrong_display
from conformance.ucum import convert

_SD = "http://hl7.org/fhir/StructureDefinition/"
_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
MIN_VALUE, MAX_VALUE = _SD + "minValue", _SD + "maxValue"
MIN_LENGTH, REGEX, MAX_DECIMALS = _SD + "minLength", _SD + "regex", _SD + "maxDecimalPlaces"
MIME_TYPE, MAX_SIZE = _SD + "mimeType", _SD + "maxSize"
MIN_OCCURS, MAX_OCCURS = _SD + "questionnaire-minOccurs", _SD + "questionnaire-maxOccurs"
UNIT_OPTION, UNIT_VALUE_SET = _SD + "questionnaire-unitOption", _SD + "questionnaire-unitValueSet"
REFERENCE_RESOURCE, EXCLUSIVE = _SD + "questionnaire-referenceResource", _SD + "questionnaire-optionExclusive"
MIN_QUANTITY, MAX_QUANTITY = _SDC + "sdc-questionnaire-minQuantity", _SDC + "sdc-questionnaire-maxQuantity"

# The value[x] an answer may have, per item type.
ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("Boolean",),
    "decimal": ("Decimal",),
    "integer": ("Integer",),
    "date": ("Date",),
    "dateTime": ("DateTime",),
    "time": ("Time",),
    "string": ("String",),
    "text": ("String",),
    "url": ("Uri",),
    "choice": ("Coding", "Date", "Time", "Integer", "String"),
    "open-choice": ("Coding", "Date", "Time", "Integer", "String"),
    "attachment": ("Attachment",),
    "reference": ("Reference",),
    "quantity": ("Quantity",),
}


class AnswerCheck:
    """Check answers to items of one Questionnaire (``contained`` holds the value sets it may refer to)."""

    def __init__(self, run: Run, support: Support | None, contained: Iterable[Any]) -> None:
        self.run = run
        self.support = support
        self.contained = list(contained)

    def check(self, q_item: dict[str, Any], answer: dict[str, Any], path: str, count: int) -> None:
        """Check one answer of an item (``count`` answers in all)."""
        found = value_of(answer)
        kind = q_item.get("type")
        if found is None or not isinstance(kind, str) or kind not in ANSWER_TYPES:
            return
        key, value_type, value = found
        here = f"{path}.{key}"
        if value_type not in ANSWER_TYPES[kind]:
            wanted = " or ".join(ANSWER_TYPES[kind])
            self.run.error("invariant", here, f"Answer value must be of the type {wanted}, not {value_type}")
            return
        options = [o for o in as_list(q_item.get("answerOption")) if type(o) is dict]
        if value_type == "Coding":
            self._coding(q_item, options, value, here, count)
        elif value_type in ("Integer", "Date", "Time", "String", "Decimal") and options:
            self._option(options, key, value, here, kind == "open-choice")
        if value_type in ("Integer", "Decimal"):
            self._number(q_item, value, here)
        elif value_type in ("Date", "DateTime"):
            self._date(q_item, value, here)
        elif value_type == "Time":
            self._time(q_item, value, here)
        elif value_type == "String":
            self._string(q_item, value, here)
        elif value_type == "Quantity":
            self._quantity(q_item, value, here)
        elif value_type == "Attachment":
            self._attachment(q_item, value, here)
        elif value_type == "Reference":
            self._reference(q_item, value, here)

    def _option(self, options: list[dict[str, Any]], key: str, value: object, path: str, open_choice: bool) -> None:
        listed = [o[key] for o in options if key in o]
        if not listed:
            if not open_choice:
                self.run.error("invariant", path, "The item's answerOptions have no value of this type")
            return
        if value not in listed:
            self.run.error("invariant", path, "The value is not in the set of permitted values")

    def _coding(
        self, q_item: dict[str, Any], options: list[dict[str, Any]], value: object, path: str, count: int
    ) -> None:
        if type(value) is not dict:
            return
        system, code = value.get("system"), value.get("code")
        if options:
            codings = [(o, o["valueCoding"]) for o in options if type(o.get("valueCoding")) is dict]
            if not codings:
                if q_item.get("type") != "open-choice":
                    self.run.error("invariant", path, "The item's answerOptions have no codings")
                return
            for option, coding in codings:
                if coding.get("system") == system and coding.get("code") == code:
                    exclusive = extension_value(option, EXCLUSIVE)
                    if exclusive is not None and exclusive[1] is True and count > 1:
                        self.run.error(
                            "invariant",
                            path,
                            "The selected answer is an exclusive option: nothing else can be selected",
                        )
                    return
            if q_item.get("type") == "open-choice" and system is None and code is None:
                return
            self.run.error("invariant", path, "The code is not in the set of permitted values")
            return
        url = q_item.get("answerValueSet")
        if type(url) is not str:
            return
        if q_item.get("type") == "open-choice" and system is None and code is None:
            return
        found = expansion(url, self.support, self.contained)
        if found is not None and contains(found, system, code) is False:
            self.run.error("code-invalid", path, "The code is not in the item's answer value set")
        elif found is not None:
            right = wrong_display(value)
            if right is not None:
                self.run.error("invalid", f"{path}.display", f"Wrong display for the code: it is '{right}'")

    def _number(self, q_item: dict[str, Any], value: object, path: str) -> None:
        number = decimal_of(value)
        if number is None:
            return
        for url, above in ((MIN_VALUE, False), (MAX_VALUE, True)):
            limit = extension_value(q_item, url)
            bound = decimal_of(limit[1]) if limit is not None else None
            if bound is not None and (number > bound if above else number < bound):
                word = "greater than the allowed maximum" if above else "less than the allowed minimum"
                self.run.error("invariant", path, f"The value is {word} of {bound}")
        places = extension_value(q_item, MAX_DECIMALS)
        if places is not None and type(places[1]) is int:
            text = str(value)
            if "." in text and "e" not in text.lower() and len(text) - text.index(".") - 1 > places[1]:
                self.run.error("invariant", path, f"The value has too many decimal places (limit = {places[1]})")

    def _date(self, q_item: dict[str, Any], value: object, path: str) -> None:
        here = instant(value)
        if here is None:
            return
        for url, above in ((MIN_VALUE, False), (MAX_VALUE, True)):
            limit = extension_value(q_item, url)
            bound = instant(limit[1]) if limit is not None else None
            if bound is not None and (here > bound if above else here < bound):
                word = "greater than the allowed maximum" if above else "less than the allowed minimum"
                self.run.error("invariant", path, f"The value is {word} of {limit[1] if limit else ''}")

    def _time(self, q_item: dict[str, Any], value: object, path: str) -> None:
        if type(value) is not str:
            return
        for url, above in ((MIN_VALUE, False), (MAX_VALUE, True)):
            limit = extension_value(q_item, url)
            if limit is not None and type(limit[1]) is str and (value > limit[1] if above else value < limit[1]):
                word = "greater than the allowed maximum" if above else "less than the allowed minimum"
                self.run.error("invariant", path, f"The time is {word} of {limit[1]}")

    def _string(self, q_item: dict[str, Any], value: object, path: str) -> None:
        if type(value) is not str:
            return
        minimum = extension_value(q_item, MIN_LENGTH)
        if minimum is not None and type(minimum[1]) is int and len(value) < minimum[1]:
            self.run.error("invariant", path, f"The answer is shorter than the required minimum length of {minimum[1]}")
        maximum = q_item.get("maxLength")
        if type(maximum) is int and len(value) > maximum:
            self.run.error("invariant", path, f"The answer is longer than the allowed maximum length of {maximum}")
        pattern = extension_value(q_item, REGEX)
        if pattern is not None and type(pattern[1]) is str:
            try:
                matched = (
                    re.search(pattern[1], value) is not None
                    if pattern[1].startswith("^")
                    else re.fullmatch(pattern[1], value) is not None
                )
            except re.error:
                return
            if not matched:
                self.run.error("invariant", path, "The answer does not conform to the expected format")

    def _quantity(self, q_item: dict[str, Any], value: object, path: str) -> None:
        if type(value) is not dict:
            return
        amount = decimal_of(value.get("value"))
        for url, above in ((MIN_QUANTITY, False), (MAX_QUANTITY, True)):
            limit = extension_value(q_item, url)
            if limit is None or type(limit[1]) is not dict or amount is None:
                continue
            word = "maximum" if above else "minimum"
            bound = limit[1]
            bound_amount = decimal_of(bound.get("value"))
            if not (bound.get("system") and bound.get("code") and value.get("system") and value.get("code")):
                self.run.error(
                    "invariant", path, f"The quantity cannot be compared to the allowed {word}: no formal units"
                )
                continue
            if bound_amount is None:
                continue
            if bound["system"] == value["system"] and bound["code"] == value["code"]:
                converted: Decimal | None = amount
            elif bound["system"] == value["system"] == "http://unitsofmeasure.org":
                converted = convert(amount, str(value["code"]), str(bound["code"]))
            else:
                converted = None
            if converted is None:
                self.run.error("invariant", path, f"The quantity cannot be compared to the allowed {word}")
            elif converted > bound_amount if above else converted < bound_amount:
                word = "greater than the allowed maximum" if above else "less than the allowed minimum"
                self.run.error("invariant", path, f"The quantity is {word}")
        options = extensions(q_item, UNIT_OPTION)
        if options:
            units = [o["valueCoding"] for o in options if type(o.get("valueCoding")) is dict]
            if not any(_unit_matches(value, unit) for unit in units):
                self.run.error("invariant", path, "The quantity has a unit that is not one of the unit options")
        unit_value_set = extension_value(q_item, UNIT_VALUE_SET)
        if unit_value_set is not None and type(unit_value_set[1]) is str:
            found = expansion(unit_value_set[1], self.support, self.contained)
            if found is not None and contains(found, value.get("system"), value.get("code")) is False:
                self.run.error("invariant", path, "The quantity has a unit that is not in the unit value set")

    def _attachment(self, q_item: dict[str, Any], value: object, path: str) -> None:
        if type(value) is not dict:
            return
        mime_types = [m.get("valueCode") for m in extensions(q_item, MIME_TYPE)]
        if mime_types:
            content_type = value.get("contentType")
            if type(content_type) is not str:
                self.run.error("required", path, "The attachment has no content type")
            elif not any(type(m) is str and content_type.startswith(m) for m in mime_types):
                self.run.error("required", path, "The attachment's mime type is not one the item allows")
        size = extension_value(q_item, MAX_SIZE)
        data = value.get("data")
        if size is not None and decimal_of(size[1]) is not None and type(data) is str:
            length = _decoded_length(data)
            limit = decimal_of(size[1])
            if length is not None and limit is not None and length >= limit:
                self.run.error("required", path, f"The attachment is too large (allowed = {limit})")

    def _reference(self, q_item: dict[str, Any], value: object, path: str) -> None:
        if type(value) is not dict or type(value.get("reference")) is not str:
            return
        reference = value["reference"]
        if reference.startswith("#"):
            return
        resource_type = _reference_type(reference)
        allowed = [e.get("valueCode") for e in extensions(q_item, REFERENCE_RESOURCE)]
        if allowed:
            if resource_type is None or resource_type not in allowed:
                self.run.error("invariant", path, f"The reference's resource type is not allowed (allowed = {allowed})")
        elif resource_type is not None and resource_type not in self.run.resource_types:
            self.run.error("invariant", path, "The resource type in the reference is not valid")


def extensions(item: dict[str, Any], url: str) -> list[dict[str, Any]]:
    """Return the item's extensions with a url."""
    return [e for e in as_list(item.get("extension")) if type(e) is dict and e.get("url") == url]


def extension_value(item: dict[str, Any], url: str) -> tuple[str, Any] | None:
    """Return (type, value) of the first extension with a url, or None."""
    for extension in extensions(item, url):
        for key, value in extension.items():
            if key.startswith("value"):
                return key[5:], value
    return None


def value_of(answer: dict[str, Any]) -> tuple[str, str, Any] | None:
    """Return (JSON name, type, value) of an answer's value[x], or None."""
    for key, value in answer.items():
        if key.startswith("value"):
            return key, key[5:], value
    return None


def decimal_of(value: object) -> Decimal | None:
    """Return a JSON number as a Decimal, or None."""
    if type(value) in (int, float, Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return None


def instant(value: object) -> tuple[int, ...] | None:
    """A date or dateTime as the start of the period it names, for min/max comparisons."""
    found = moment(value)
    if found is None:
        return None
    if found.utc is not None:
        stamp = found.utc
        return (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second, stamp.microsecond)
    parts = found.parts + (1,) * (3 - len(found.parts))
    return (*parts, 0, 0, 0, 0)


def _unit_matches(value: dict[str, Any], unit: dict[str, Any]) -> bool:
    return (
        ("system" not in unit or unit["system"] == value.get("system"))
        and ("code" not in unit or unit["code"] == value.get("code"))
        and ("display" not in unit or unit["display"] == value.get("unit"))
    )


def _decoded_length(data: str) -> int | None:
    try:
        return len(base64.b64decode("".join(data.split()), validate=False))
    except (binascii.Error, ValueError):
        return None


def _reference_type(reference: str) -> str | None:
    parts = reference.split("?", 1)[0].split("/")
    index = parts.index("_history") - 2 if "_history" in parts else len(parts) - 2
    return parts[index] if index >= 0 and parts[index] else None
