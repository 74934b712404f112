"""Element readers: instants read alike whichever way they are parsed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mappers.elements import instant, items


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
