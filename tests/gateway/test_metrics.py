"""``observe_many`` leaves a histogram as that many ``observe`` calls do."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import observe_many


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=20, allow_nan=False), st.integers(min_value=0, max_value=300)),
        max_size=8,
    )
)
def test_observe_many_counts_as_observe_does(batches: list[tuple[float, int]]) -> None:
    many = Histogram("h", "many", ["type"], registry=CollectorRegistry())
    each = Histogram("h", "each", ["type"], registry=CollectorRegistry())
    for amount, count in batches:
        observe_many(many.labels("Appointment"), amount, count)
        child = each.labels("Appointment")
        for _ in range(count):
            child.observe(amount)
    got, expected = _samples(many), _samples(each)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if name[0].endswith("_sum"):  # one multiplication against count additions
            assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert got[name] == value


def test_observe_many_on_an_unlabelled_parent_refuses_as_observe_does() -> None:
    parent = Histogram("h", "parent", ["type"], registry=CollectorRegistry())
    for call in (lambda: parent.observe(1.0), lambda: observe_many(parent, 1.0, 3)):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError("observed without labels")
