"""Strict JSON: the fast path (orjson plus byte-level proofs) answers exactly as the standard parser would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.web.body import parse_json

DEPTH = 12
LONGEST = 64 * 1024

# Keys and strings with the characters that could fool a byte-level check: colons, quotes, backslashes, brackets.
text = st.text(alphabet=st.sampled_from(list('ab:"\\[]{}\u00e9 ,\n')) | st.characters(codec="utf-8"), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(
    scalars | text, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4)
)
styles = st.sampled_from(
    [
        {"ensure_ascii": False, "separators": (",", ":")},
        {"ensure_ascii": True},
        {"ensure_ascii": False, "indent": 1},
        {"ensure_ascii": False, "separators": (" , ", " : ")},
    ]
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(values, styles)
def test_what_parses_is_what_the_standard_parser_reads(value: Any, style: dict[str, Any]) -> None:
    raw = json.dumps(value, **style).encode()
    if depth(value) > DEPTH:
        with pytest.raises(BadRequest, match="nested deeper"):
            parse_json(raw, max_depth=DEPTH, max_string=LONGEST)
        return
    assert parse_json(raw, max_depth=DEPTH, max_string=LONGEST) == json.loads(raw)


@given(st.dictionaries(text, values, min_size=1, max_size=4), st.data(), styles)
def test_a_duplicate_key_anywhere_is_refused(obj: dict[str, Any], data: st.DataObject, style: dict[str, Any]) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    raw = json.dumps(obj, **style).encode()
    extra = json.dumps({key: data.draw(values)}, **style).encode()
    duplicated = raw[:-1] + b"," + extra[1:]  # the same key again, at the end
    nested = b'{"outer": [' + duplicated + b"]}"
    for body in (duplicated, nested):
        with pytest.raises(BadRequest, match=r"duplicate JSON key|nested deeper"):
            parse_json(body, max_depth=DEPTH, max_string=LONGEST)


@pytest.mark.parametrize("levels", [DEPTH - 1, DEPTH, DEPTH + 1])
@pytest.mark.parametrize("shape", ["lists", "objects", "mixed"])
def test_the_depth_limit_is_exact(levels: int, shape: str) -> None:
    raw = b"1"
    for level in range(levels):
        as_list = shape == "lists" or (shape == "mixed" and level % 2)
        raw = b"[" + raw + b"]" if as_list else b'{"k":' + raw + b"}"
    if levels > DEPTH:
        with pytest.raises(BadRequest, match="nested deeper"):
            parse_json(raw, max_depth=DEPTH, max_string=LONGEST)
    else:
        assert parse_json(raw, max_depth=DEPTH, max_string=LONGEST) == json.loads(raw)


def test_brackets_and_quotes_inside_strings_do_not_count_as_nesting() -> None:
    inside = "[" * (DEPTH * 3) + '\\"{' * DEPTH
    raw = json.dumps({"a": [inside, {"b": "]}\\"}]}).encode()
    assert parse_json(raw, max_depth=DEPTH, max_string=LONGEST) == json.loads(raw)


def test_brackets_inside_strings_cannot_hide_nesting() -> None:
    """A closing bracket in the first string and an opening one in the last would pair with the outermost list's
    own brackets if strings were not told apart: the document would look one level shallower than it is."""
    inner: Any = 1
    for _ in range(DEPTH):
        inner = [inner]
    too_deep = ["]", inner, "["]  # DEPTH + 1 levels
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json(json.dumps(too_deep).encode(), max_depth=DEPTH, max_string=LONGEST)
    shallow = ["]", inner[0], "["]  # DEPTH levels
    assert parse_json(json.dumps(shallow).encode(), max_depth=DEPTH, max_string=LONGEST) == shallow


def test_a_string_past_the_limit_is_refused_on_either_path() -> None:
    for body in ({"a": "x" * (LONGEST + 1)}, {"a": "\u00e9" * (LONGEST + 1)}):
        for ascii_only in (False, True):
            with pytest.raises(BadRequest, match="longer than"):
                parse_json(json.dumps(body, ensure_ascii=ascii_only).encode(), max_depth=DEPTH, max_string=LONGEST)


@pytest.mark.parametrize("levels", [300, 1100, 100_000])
def test_nesting_past_what_orjson_reads_or_writes_is_a_400_not_a_crash(levels: int) -> None:
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json(b"[" * levels + b"]" * levels, max_depth=DEPTH, max_string=LONGEST)


@pytest.mark.parametrize(
    "literal", ["-9223372036854775809", "18446744073709551616", "-99999999999999999999", "123456789012345678901234"]
)
def test_an_integer_past_64_bits_stays_an_exact_integer(literal: str) -> None:
    """orjson reads these as floats; the body must still hold the integer the client sent (or be refused)."""
    raw = f'{{"resourceType": "Observation", "valueInteger": {literal}, "note": "e+1"}}'.encode()
    assert parse_json(raw, max_depth=DEPTH, max_string=LONGEST)["valueInteger"] == int(literal)
