"""Element readers: instants read alike whichever way they are parsed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.elements import (
    _own_labels,
    identifier_fields,
    identifiers,
    instant,
    instant_and_text,
    instant_text,
    items,
    merge_labels,
    security_labels,
    utc_text,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-04T14:00:00Z", datetime(2027, 1, 4, 14, 0, tzinfo=UTC)),
        (" 2027-01-04T14:00:00Z", datetime(2027, 1, 4, 14, 0, tzinfo=UTC)),
        ("2027-01-04T14:00:60Z", datetime(2027, 1, 4, 14, 0, 59, tzinfo=UTC)),  # a leap second
        ("2027-01-04T14:00Z", datetime(2027, 1, 4, 14, 0, tzinfo=UTC)),
        ("2027-01-04T16:00:00+02:00", datetime(2027, 1, 4, 14, 0, tzinfo=UTC)),
        ("2027-02-30T14:00:00Z", None),
        ("2027-W01-1T14:00:00Z", None),  # a week date: not a FHIR instant
        ("2027-01-04 14:00:00Z", None),
        ("\u0662\u0660\u0662\u0667-01-04T14:00:00Z", None),  # digits, but not ASCII ones
        ("2027-01-04T14:00:00", None),  # local time without the clinic's zone
    ],
)
def test_instants_read_as_the_same_point_in_utc_whatever_their_form(value: str, expected: datetime | None) -> None:
    found = instant(value, None)
    assert found == expected
    assert found is None or found.tzinfo is UTC


def test_items_reads_a_lone_object_as_one_element_and_anything_else_as_none() -> None:
    assert list(items([{"a": 1}, {"b": 2}])) == [{"a": 1}, {"b": 2}]
    assert list(items({"a": 1})) == [{"a": 1}]
    assert list(items(None)) == list(items("text")) == list(items(3)) == []


# Instants written back as the records carry them: the plain UTC form is its own text, everything else is read and
# written; either way the text is what reading and writing it makes (the reference: ``utc_text(instant(...))``).
_PLAIN = st.builds(
    "{}-{}-{}T{}:{}:{}Z".format,
    st.sampled_from(["0000", "0001", "1970", "2027", "9999", "20a7", "\u0662027"]),
    *(st.sampled_from(["00", "01", "02", "09", "12", "13", "23", "24", "29", "30", "31", "59", "60", "99", "1 "])
      for _ in range(5)),
)  # fmt: skip


@given(st.one_of(_PLAIN, st.text(max_size=26), st.none(), st.integers()), st.sampled_from([None, "America/New_York"]))
def test_instant_text_is_the_instant_written_as_utc_text(value: object, zone_name: str | None) -> None:
    assert instant_text(value, zone_name) == utc_text(instant(value, zone_name))


_LABELS = st.one_of(
    st.none(), st.just(""), st.just({}), st.just([]), st.integers(), st.text(max_size=3),
    st.lists(st.one_of(st.text(max_size=2), st.fixed_dictionaries({"code": st.text(max_size=2)}), st.none())),
)  # fmt: skip
_META = st.one_of(st.none(), st.just("x"), st.fixed_dictionaries({}, optional={"security": _LABELS}))
_RESOURCE = st.fixed_dictionaries(
    {"resourceType": st.just("Appointment")},
    optional={"meta": _META, "contained": st.one_of(st.none(), st.lists(st.fixed_dictionaries({"meta": _META})))},
)


@given(_RESOURCE)
def test_security_labels_are_every_label_of_the_resource_and_its_contained_ones(resource: dict[str, Any]) -> None:
    contained = [c for c in items(resource.get("contained")) if isinstance(c, Mapping)]
    reference = merge_labels(_own_labels(each) for each in (resource, *contained))
    assert security_labels(resource) == reference


@pytest.mark.parametrize(
    "value",
    [
        "2027-01-04T14:00:00Z",
        "2027-01-04T14:00:60Z",  # a leap second: read by the expression, written as :59
        "2027-13-04T14:00:00Z",  # the plain form, no date
        "2027-01-04T14:00Z",
        "2027-01-04T14:00:00.123+02:00",
        "2027-01-04T14:00:00",  # local: only the zone says when
        " 2027-01-04T14:00:00Z ",
        "2027-01-04T14:00:00z",
        "\uff12\uff10\uff12\uff17-01-04T14:00:00Z",  # non-ASCII digits
        "",
        None,
        42,
    ],
)
@pytest.mark.parametrize("zone_name", [None, "America/New_York", "Not/AZone"])
def test_instant_and_text_is_instant_and_instant_text(value: object, zone_name: str | None) -> None:
    assert instant_and_text(value, zone_name) == (instant(value, zone_name), instant_text(value, zone_name))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ({"system": "s", "value": "v"}, [("s", "v", None)]),
        (
            [{"system": "s", "value": "v", "use": "usual"}, {"system": " ", "value": ""}, "x", {"use": "old"}],
            [("s", "v", "usual")],
        ),
        ([{"value": "v"}, {"system": "s", "value": 3}], [(None, "v", None), ("s", None, None)]),
    ],
)
def test_identifiers_keep_those_with_a_system_or_a_value(
    value: object, expected: list[tuple[str | None, str | None, str | None]]
) -> None:
    assert [(f["system"], f["value"], f["use"]) for f in identifier_fields(value)] == expected
    assert [(i.system, i.value, i.use) for i in identifiers(value)] == expected
