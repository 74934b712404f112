"""Finding and rewriting literal references on a resource's JSON text answers exactly as walking its objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway import encoding
from gateway.store.references import reference_targets, rewrite_references
from tests.support import rewritten_references

# Strings with what could fool a text scan: quotes, backslashes (also before a quote), the marker itself.
text = st.text(alphabet=st.sampled_from(list('ab:"\\/ \u00e9\n')), max_size=10) | st.sampled_from(
    ['"reference":"x"', '\\"', "\\\\", "urn:uuid:1", "Patient/1", '\\"reference\\":\\"urn:uuid:1\\"']
)
keys = st.sampled_from(["reference", "actor", "a", 'reference"', "display"]) | text
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
)
mappings = st.dictionaries(text, st.sampled_from(["Patient/p1", "Practitioner/x-2", 'Odd/"q\\']), max_size=4)


def walked_targets(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.add(value)
            else:
                found |= walked_targets(value)
    elif isinstance(node, list):
        for item in node:
            found |= walked_targets(item)
    return found


@given(values)
def test_targets_are_every_reference_key_holding_a_string(value: Any) -> None:
    assert reference_targets(value) == walked_targets(value)


@given(values, mappings)
def test_rewriting_replaces_exactly_the_mapped_references(value: Any, mapping: dict[str, str]) -> None:
    assert rewrite_references(value, mapping) == rewritten_references(value, mapping)


@given(values, mappings)
def test_used_references_are_the_mapped_ones(value: Any, mapping: dict[str, str]) -> None:
    found = reference_targets(value)
    mapping.update({target: "Patient/new" for target in list(found)[:1]})
    assert rewrite_references(value, mapping) == rewritten_references(value, mapping)


def test_a_resource_without_mapped_references_is_returned_as_it_is() -> None:
    resource = {"resourceType": "Appointment", "participant": [{"actor": {"reference": "Practitioner/1"}}]}
    assert rewrite_references(resource, {"urn:uuid:other": "Patient/p"}) is resource
    rewritten = rewrite_references(resource, {"Practitioner/1": "Practitioner/2"})
    assert rewritten["participant"][0]["actor"]["reference"] == "Practitioner/2"
    assert resource["participant"][0]["actor"]["reference"] == "Practitioner/1"


# Numbers orjson writes and reads exactly (up to 64 bits, with runs of 19 and 20 digits) and past it, floats, and
# strings holding long runs of digits: what ``encoding.loads`` looks for before it lets orjson read.
exact = st.recursive(
    st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from([10**18, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 2**64, -(2**63) - 1, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["1234567890123456789012", "x99999999999999999999y"])
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
)


@given(st.lists(exact, max_size=4), mappings)
def test_a_rewritten_resource_is_what_encoding_reads_of_the_rewritten_text(
    values_: list[Any], mapping: dict[str, str]
) -> None:
    """A rewrite read back by orjson alone (when orjson wrote the resource) is, value for value and type for type, what
    ``encoding.loads`` (the reading before: the standard library for a text with 19 digits in a row) made of it."""
    node = {"a": values_, "b": [{"reference": ref} for ref in mapping] + [{"reference": "urn:uuid:1"}]}
    mapping = {**mapping, "urn:uuid:1": "Patient/p1"}
    before = encoding.loads(encoding.dumps(rewritten_references(node, mapping)))
    after = rewrite_references(node, mapping)
    assert encoding.dumps(after) == encoding.dumps(before)
    assert _typed(after) == _typed(before)


def _typed(value: Any) -> Any:
    """The value with every number's type beside it (``1 == 1.0`` in Python)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)
