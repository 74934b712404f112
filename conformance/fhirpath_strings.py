"""FHIRPath's string and arithmetic functions for the compiled R4 invariants (see ``fhirpath``)."""

from __future__ import annotations

import re
from functools import cache

from conformance.fhirpath import NO_VALUE, Items, number, single


def add(left: Items, right: Items) -> Items:
    """FHIRPath ``+`` on numbers or strings."""
    a, b = single(left), single(right)
    if a is None or b is None:
        return []
    x, y = number(a), number(b)
    if x is not None and y is not None:
        return [x + y]
    if type(a) is str and type(b) is str:
        return [a + b]
    return []


def concat(left: Items, right: Items) -> Items:
    """FHIRPath ``&``: string concatenation, empty counting as ''."""
    a, b = single(left), single(right)
    return [_text(a) + _text(b)]


def _text(value: object) -> str:
    if value is None or value is NO_VALUE:
        return ""
    return value if type(value) is str else str(value)


def _string(items: Items) -> str | None:
    value = single(items)
    return value if type(value) is str else None


def starts_with(items: Items, prefix: Items) -> Items:
    """FHIRPath ``startsWith()``."""
    value, start = _string(items), _string(prefix)
    return [] if value is None or start is None else [value.startswith(start)]


def contains_text(items: Items, part: Items) -> Items:
    """FHIRPath ``contains()`` (the string function)."""
    value, sought = _string(items), _string(part)
    return [] if value is None or sought is None else [sought in value]


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(items: Items, pattern: Items) -> Items:
    """FHIRPath ``matches()``: the whole string matches the regex (as the reference validator has it)."""
    value, regex = _string(items), _string(pattern)
    if value is None or regex is None:
        return []
    return [_regex(regex).fullmatch(value) is not None]


def replace_matches(items: Items, pattern: Items, substitution: Items) -> Items:
    """FHIRPath ``replaceMatches()``."""
    value, regex, replacement = _string(items), _string(pattern), _string(substitution)
    if value is None or regex is None or replacement is None:
        return []
    return [_regex(regex).sub(replacement.replace("\\", "\\\\"), value)]


def substring(items: Items, start: Items, length: Items | None = None) -> Items:
    """FHIRPath ``substring()``."""
    value, first = _string(items), single(start)
    if value is None or type(first) is not int or not 0 <= first < len(value):
        return []
    if length is None:
        return [value[first:]]
    count = single(length)
    return [value[first : first + count]] if type(count) is int else []


def to_integer(items: Items) -> Items:
    """FHIRPath ``toInteger()``."""
    value = single(items)
    if type(value) is int:
        return [value]
    if type(value) is str and re.fullmatch(r"[+-]?\d+", value):
        return [int(value)]
    return []


def to_string(items: Items) -> Items:
    """FHIRPath ``toString()``."""
    value = single(items)
    if value is None or value is NO_VALUE or type(value) is dict:
        return []
    if type(value) is bool:
        return ["true" if value else "false"]
    return [str(value)]
