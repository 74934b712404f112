"""The benchmark's report says when a closed loop did not keep its API processes busy: the rate it printed is then
the clients' (each waits for its answer), not the API's capacity. No processes: the report of given figures."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support import BENCH_MACHINE as MACHINE
from tests.support import bench_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_script("gateway_bench")


def accepted(bench: ModuleType, size: int, api_pct: float, processes: int = 1) -> object:
    return bench.AcceptanceResult(
        size=size, concurrency=8, bundles=100, resources=100 * size, api_cpu_pct=api_pct, api_processes=processes
    )


def test_a_closed_loop_with_its_api_idle_part_of_the_time_is_named(bench: ModuleType) -> None:
    text = bench.report(MACHINE, [accepted(bench, 20, 89.0), accepted(bench, 100, 97.0)], None, None)

    notes = [line for line in text.splitlines() if "busy less than" in line]
    assert len(notes) == 1
    assert "20-entry Bundles (89% of a core for 1 API process)" in notes[0]
    assert "100-entry" not in notes[0]
    assert "--concurrency" in notes[0]


def test_busy_api_processes_get_no_note(bench: ModuleType) -> None:
    # One API process at 92% of a core, and two at 190% (95% each), are busy enough.
    text = bench.report(MACHINE, [accepted(bench, 20, 92.0), accepted(bench, 100, 190.0, processes=2)], None, None)

    assert "busy less than" not in text


def test_two_api_processes_are_measured_against_two_cores(bench: ModuleType) -> None:
    text = bench.report(MACHINE, [accepted(bench, 20, 120.0, processes=2)], None, None)

    assert "20-entry Bundles (120% of a core for 2 API processes)" in text
