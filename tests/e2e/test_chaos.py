"""End-to-end: the chaos command's short version (``bench/chaos.py``) loses and duplicates nothing.

A few scenarios of ``bench/chaos.py`` with a few seconds of load and few kills: real ``fhir-gateway`` processes,
their own ``redis-server`` (killed and restarted on the same port and data folder), every acknowledged write then
read back from the store, the change feed and the records. The full run and its figures: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import bench_script

pytestmark = pytest.mark.e2e


def chaos_module() -> ModuleType:
    return bench_script("chaos")


@pytest.mark.parametrize("scenario", ["worker-kill", "redis-kill"])
def test_short_chaos_loses_and_duplicates_nothing(scenario: str, tmp_path: Path) -> None:
    chaos = chaos_module()
    plan = chaos.Plan(short=True, seconds=4, worker_kills=2, redis_kills=2, freezes=1, webhook_down=2,
                      connector_resources=10)  # fmt: skip
    result = asyncio.run(chaos.run_scenario(scenario, plan, tmp_path))
    print(result.line())
    assert result.acknowledged > 0, result.problems
    assert (result.lost, result.duplicated, result.problems) == (0, 0, [])
