"""``bench/request_cost.py`` drives the real app in process: every kind of request it times is answered as
expected (it raises on any other status), and it prints one row per kind."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from tests.support import bench_script


@pytest.fixture(scope="module")
def request_cost() -> ModuleType:
    return bench_script("request_cost")


async def test_every_kind_is_answered_and_timed(
    request_cost: ModuleType, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await request_cost.run(redis_url, key_prefix, list(request_cost.KINDS), requests=4, rounds=2)
    printed = capsys.readouterr().out
    rows = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\| (\S+) \| ([\d,]+) \|", printed, re.M)}
    assert set(rows) == set(request_cost.KINDS)
    assert all(us > 0 for us in rows.values())
