"""Stored JSON is read back as it was written: integers past 64 bits stay exact integers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway import encoding
from gateway.store.references import rewrite_references

WIDE = [-(2**63) - 1, 2**64, 2**64 - 1, -(2**70), 10**30]
text = st.text(alphabet=st.sampled_from(list('a0189"\\: -.e')), max_size=24)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
)


def test_integers_past_64_bits_are_read_back_exactly() -> None:
    for number in WIDE:
        value = {"extension": [{"url": "u", "valueDecimal": number}], "n": [number]}
        for raw in (encoding.dumps(value), encoding.dumps(value).decode()):
            read = encoding.loads(raw)
            assert read == value
            assert type(read["n"][0]) is int


def test_long_digit_runs_in_strings_read_as_strings() -> None:
    value = {"id": "1234567890123456789012", "n": 7, "x": 1.5}
    assert encoding.loads(encoding.dumps(value)) == value


@given(values)
def test_what_is_written_is_read_back(value: Any) -> None:
    assert encoding.loads(encoding.dumps(value)) == json.loads(json.dumps(value))


def test_rewriting_a_reference_keeps_a_wide_integer_exact() -> None:
    resource = {"valueDecimal": -(2**63) - 1, "actor": {"reference": "urn:uuid:1"}}
    rewritten = rewrite_references(resource, {"urn:uuid:1": "Patient/p"})
    assert rewritten == {"valueDecimal": -(2**63) - 1, "actor": {"reference": "Patient/p"}}
