"""A search parameter's compiled walkers reach exactly what its path means, on any JSON shape; a date's range is
what datetime makes of it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.parameters import (
    _DATE,
    Parameter,
    _general_range,
    _instant_range,
    _range,
    dates,
    indexed,
    reached,
    relative_reference,
)

PARAMS = [p for rtype in ("Appointment", "Patient", "Observation", "QuestionnaireResponse") for p in
          indexed(rtype).values()]  # fmt: skip
NAMES = sorted({s for p in PARAMS for path in p.paths for s in path if isinstance(s, str)} | {"system", "reference"})
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(
        ["Patient/p1", "Practitioner/x", "Location/l-1", "urn:uuid:1", "official", "booked", "http://x/Patient/9"]
    )
)
shapes = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=5)
)


def walked(node: Any, steps: tuple[Any, ...]) -> list[Any]:
    """What a path reaches, read from its meaning: lists are walked through, nothing None is kept."""
    if isinstance(node, list):
        return [found for item in node for found in walked(item, steps)]
    if not steps:
        return [] if node is None else [node]
    step, rest = steps[0], steps[1:]
    if isinstance(step, str):
        return walked(node[step], rest) if isinstance(node, dict) and node.get(step) is not None else []
    if "is" in step:
        ref = node.get("reference") if isinstance(node, Mapping) else None
        target = relative_reference(ref if isinstance(ref, str) else None)
        return walked(node, rest) if target is not None and target.split("/")[0] == step["is"] else []
    element, value = step["where"]
    return walked(node, rest) if isinstance(node, Mapping) and node.get(element) == value else []


@given(st.sampled_from(PARAMS), st.dictionaries(st.sampled_from(NAMES), shapes, max_size=6))
def test_walkers_reach_what_the_paths_name(param: Parameter, resource: dict[str, Any]) -> None:
    expected = [] if param.roots and param.roots.isdisjoint(resource) else [
        found for path in param.paths for found in walked(resource, path)
    ]  # fmt: skip
    assert reached(resource, param) == expected


def test_an_appointments_actor_is_filtered_by_type() -> None:
    actors = [{"actor": {"reference": "Patient/p1"}}, {"actor": {"reference": "Practitioner/d1"}}, {"actor": None}]
    appointment = {"resourceType": "Appointment", "participant": actors}
    params = indexed("Appointment")
    assert reached(appointment, params["patient"]) == [{"reference": "Patient/p1"}]
    assert len(reached(appointment, params["actor"])) == 2


def datetime_range(text: str) -> tuple[float, float] | None:
    """A date's range as datetime computes it: the implementation ``date_range`` had before it counted
    microseconds itself."""
    match = _DATE.match(text)
    if not match:
        return None
    g = match.groupdict()
    tz = g["tz"] or "Z"
    offset = timedelta(0) if tz == "Z" else timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    offset *= -1 if tz[0] == "-" else 1
    try:
        start = datetime(
            int(g["year"]), int(g["month"] or 1), int(g["day"] or 1),
            int(g["h"] or 0), int(g["m"] or 0), int(g["s"] or 0),
            int(float(g["frac"] or 0) * 1_000_000), tzinfo=UTC,
        ) - offset  # fmt: skip
        if g["frac"]:
            end = start + timedelta(milliseconds=1)
        elif g["s"]:
            end = start + timedelta(seconds=1)
        elif g["m"]:
            end = start + timedelta(minutes=1)
        elif g["day"]:
            end = start + timedelta(days=1)
        elif g["month"]:
            end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            end = start.replace(year=start.year + 1)
    except (ValueError, OverflowError):
        return None
    return start.timestamp() * 1000, end.timestamp() * 1000 - 1


def _digits(width: int, edges: list[int], most: int) -> st.SearchStrategy[str]:
    return (st.sampled_from(edges) | st.integers(0, most)).map(lambda n: f"{n:0{width}d}")


@st.composite
def date_texts(draw: st.DrawFn) -> str:
    """FHIR dates of every precision, with parts just in and just out of the calendar and of datetime's range."""
    text = draw(_digits(4, [0, 1, 1969, 1970, 2000, 2024, 9998, 9999], 9999))
    for part in ("-" + draw(_digits(2, [0, 1, 2, 12, 13], 99)), "-" + draw(_digits(2, [0, 1, 28, 29, 30, 31, 32], 99))):
        if draw(st.integers(0, 5)) == 0:
            return text
        text += part
    if draw(st.booleans()):
        return text
    text += f"T{draw(_digits(2, [0, 23, 24], 99))}:{draw(_digits(2, [0, 59, 60], 99))}"
    if draw(st.booleans()):
        text += ":" + draw(_digits(2, [0, 59, 60], 99))
        if draw(st.booleans()):
            text += "." + draw(st.sampled_from(["0", "5", "123", "999999", "9999995", "99999999999999999"])
                               | st.text("0123456789", min_size=1, max_size=12))  # fmt: skip
    if draw(st.booleans()):
        hours, minutes = draw(_digits(2, [0, 1, 14, 23, 99], 99)), draw(_digits(2, [0, 30, 59, 99], 99))
        text += draw(st.sampled_from(["Z", f"+{hours}:{minutes}", f"-{hours}:{minutes}"]))
    return text


@given(date_texts() | st.from_regex(_DATE, fullmatch=True) | st.text(max_size=30))
def test_a_dates_range_is_what_datetime_makes_of_it(text: str) -> None:
    assert _range(text) == datetime_range(text)


@st.composite
def instant_texts(draw: st.DrawFn) -> str:
    """Texts of an instant's length, to the second (``_instant_range`` reads them by position): valid ones, out of
    the calendar or of datetime's range, with odd offsets, non-ASCII digits or a character out of place."""
    text = draw(date_texts().filter(lambda t: len(t) == 10) | st.sampled_from(["2027-01-04", "0001-01-01"]))
    hour, minute, second = (draw(_digits(2, edges, 99)) for edges in ([0, 23, 24], [0, 59, 60], [0, 59, 60]))
    text += f"T{hour}:{minute}:{second}"
    hours, minutes = draw(_digits(2, [0, 1, 14, 23, 99], 99)), draw(_digits(2, [0, 30, 59, 99], 99))
    text += draw(st.sampled_from(["Z", f"+{hours}:{minutes}", f"-{hours}:{minutes}", "z", "+0100", "Z\n"]))
    if draw(st.integers(0, 3)) == 0:  # one character replaced: a separator, a digit (perhaps by a non-ASCII one)
        at = draw(st.integers(0, len(text) - 1))
        odd = draw(st.sampled_from(["-", ":", "T", " ", "\u0663", "\u00b2", "x", "+", "Z"]))
        text = text[:at] + odd + text[at + 1 :]
    return text


@given(instant_texts())
def test_an_instant_read_by_position_has_the_general_readings_range(text: str) -> None:
    assert _instant_range(text) == _general_range(text) == datetime_range(text)
    assert _range(text) == _general_range(text)


def datetime_dates(values: list[Any]) -> tuple[float, float] | None:
    """The range several values cover, as ``dates`` computed it before it was streamlined."""
    low, high = float("inf"), float("-inf")
    for value in values:
        spans: list[tuple[float, float]] = []
        if isinstance(value, str):
            spans = [r for r in [datetime_range(value)] if r]
        elif isinstance(value, Mapping) and ("start" in value or "end" in value):
            start = datetime_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = datetime_range(value["end"]) if isinstance(value.get("end"), str) else None
            spans = [(start[0] if start else float("-inf"), end[1] if end else float("inf"))]
        elif isinstance(value, Mapping) and isinstance(value.get("event"), list):
            spans = [r for e in value["event"] if isinstance(e, str) and (r := datetime_range(e))]
        for lo, hi in spans:
            low, high = min(low, lo), max(high, hi)
    return (low, high) if low <= high else None


dated = st.sampled_from(["2024", "2024-02-29", "1980-01-01", "2024-03-10T01:30:00-05:00", "2021-01-01T00:00:00.5Z"])
dated = dated | date_texts() | st.integers() | st.none()
date_values = st.lists(
    dated
    | st.fixed_dictionaries({}, optional={"start": dated, "end": dated, "event": st.lists(dated, max_size=3)})
    | st.fixed_dictionaries({"event": st.lists(dated, max_size=3) | dated}),
    max_size=4,
)


@given(date_values)
def test_several_values_cover_the_range_datetime_makes_of_them(values: list[Any]) -> None:
    assert dates(values) == datetime_dates(values)
