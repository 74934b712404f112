"""FHIR instants from epoch seconds."""

from __future__ import annotations

from gateway.clock import instant


def test_instants_of_one_second_and_of_the_next_keep_their_own_second_and_millisecond() -> None:
    assert instant(1_700_000_000.0) == "2023-11-14T22:13:20.000Z"
    assert instant(1_700_000_000.999) == "2023-11-14T22:13:20.999Z"
    assert instant(1_700_000_001.25) == "2023-11-14T22:13:21.250Z"
    assert instant(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"
    assert instant(-0.5) == "1969-12-31T23:59:59.500Z"
