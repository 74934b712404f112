"""End-to-end: the chaos command's short version (``bench/chaos.py``) loses and duplicates nothing.

A few scenarios of ``bench/chaos.py`` with a few seconds of load and few kills: real ``fhir-gateway`` processes,
their own ``redis-server`` (killed and restarted on the same port and data folder), every acknowledged write then
read back from the store, the change feed and the records. The full run and its figures: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def chaos_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_bench", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scenario", ["worker-kill", "redis-kill"])
def test_short_chaos_loses_and_duplicates_nothing(scenario: str, tmp_path: Path) -> None:
    chaos = chaos_module()
    plan = chaos.Plan(short=True, seconds=4, worker_kills=2, redis_kills=2, freezes=1, webhook_down=2,
                      connector_resources=10)  # fmt: skip
    result = asyncio.run(chaos.run_scenario(scenario, plan, tmp_path))
    print(result.line())
    assert result.acknowledged > 0, result.problems
    assert (result.lost, result.duplicated, result.problems) == (0, 0, [])
