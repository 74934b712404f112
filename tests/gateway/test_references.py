"""Finding and rewriting literal references on a resource's JSON text answers exactly as walking its objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

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
