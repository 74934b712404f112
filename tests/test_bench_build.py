"""The benchmark's report says which build of the gateway it measured: the compiled build (setup.py,
``GATEWAY_MYPYC=1``) and the pure-Python one differ by a sixth of the API's CPU, so figures without it cannot be
compared across runs."""

from __future__ import annotations

import importlib.machinery
from types import ModuleType, SimpleNamespace

import pytest

from tests.support import BENCH_MACHINE as MACHINE
from tests.support import bench_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_script("gateway_bench")


def test_this_checkout_is_measured_as_pure_python(bench: ModuleType) -> None:
    """The test run imports the sources, so the benchmark started from it measures them and says so."""
    line = bench.machine_line({**MACHINE, "gateway_build": bench.gateway_build()})

    assert "gateway commit 0000000, pure Python, store format 1" in line


def test_a_gateway_whose_modules_are_extension_modules_is_named_compiled(bench: ModuleType) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    found = SimpleNamespace(origin=f"/opt/venv/site-packages/gateway/store/plan{suffix}")

    build = bench.gateway_build(lambda name: found)

    assert build == "compiled (mypyc)"
    assert "compiled (mypyc), store format 1" in bench.machine_line({**MACHINE, "gateway_build": build})


def test_a_gateway_that_is_not_installed_is_not_named_compiled(bench: ModuleType) -> None:
    assert bench.gateway_build(lambda name: None) == "pure Python"
