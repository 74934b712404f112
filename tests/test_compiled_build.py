"""The compiled build (setup.py, ``GATEWAY_MYPYC=1``) is the same gateway: its wheel holds every listed module
compiled, and the golden and equivalence tests pass against it as they do against the pure-Python code.

The wheel is built the way docs/deploy.md says, from a copy of the sources (the build writes its own ``build/``),
and unpacked beside a copy of the tests, which then import the compiled packages. The tests chosen compare what
the validator says and what the store writes byte for byte with recorded figures; they replace none of the
compiled code (compiled, a module's calls to its own functions are bound at build time, so a test that patches one
measures nothing there). It takes about six minutes on a slow two-core machine: three for mypyc's type analysis of
the modules and what they import, one for the C compiler, two for the tests.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CORPUS

ROOT = Path(__file__).resolve().parents[1]
# What the compiled tree runs: the golden commits, the worker's recorded writes, the plan's marks, the validator's
# cases and its walk against the recorded verdicts.
GOLDEN = [
    "tests/gateway/test_decide_commit.py",
    "tests/gateway/test_worker_equivalence.py",
    "tests/gateway/test_plan_mark.py",
    "tests/conformance/test_validator.py",
    "tests/conformance/test_walk_equivalence.py",
    "tests/conformance/test_agreement.py",
]
# Tests in those files that patch or subclass compiled code, which compiled code does not see.
PATCHING = ["test_the_validator_never_raises", "test_made_up_resources_are_committed_as_before"]

needs_a_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="the compiled build needs a C compiler"
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the compiled wheel from a copy of the sources and unpack it with a copy of the tests; return that tree."""
    pytest.importorskip("mypyc.build")
    work = tmp_path_factory.mktemp("compiled")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    for package in ("gateway", "mappers", "connectors", "conformance"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    wheels = work / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(wheels), "."],
        cwd=source, env={**os.environ, "GATEWAY_MYPYC": "1"}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    tree = work / "tree"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@needs_a_compiler
@pytest.mark.long
def test_the_compiled_build_compiles_every_listed_module_and_passes_the_golden_tests(compiled: Path) -> None:
    """One test, so that ``-n 2`` builds the wheel once."""
    modules = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_modules")["MODULES"]
    names = [m.removesuffix(".py").replace("/", ".") for m in modules]
    # Isolated (-I): neither PYTHONPATH nor the working folder is on the path; the tree goes first by hand, ahead of
    # the editable install of the checkout, as pytest puts it there for the tests below.
    script = "import importlib, sys\nsys.path.insert(0, sys.argv[1])\nfor name in sys.argv[2:]:\n"
    script += "    print(importlib.import_module(name).__file__)\n"
    found = subprocess.run(
        [sys.executable, "-I", "-c", script, str(compiled), *names], cwd=compiled, capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    assert len(found) == len(names)
    for name, path in zip(names, found, strict=True):
        assert path.startswith(str(compiled)) and path.endswith(".so"), (name, path)

    env = {**os.environ, "GATEWAY_CORPUS_DIR": str(CORPUS)}
    env.pop("PYTHONPATH", None)
    if (ROOT / ".git").exists():  # the walk-equivalence tests read the old validator from this checkout's history
        env["GIT_DIR"] = str(ROOT / ".git")
    ran = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k",
         " and ".join(f"not {name}" for name in PATCHING), *GOLDEN],
        cwd=compiled, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = ran.stdout[-4000:] + ran.stderr[-2000:]
    assert ran.returncode == 0, tail
    assert " passed" in ran.stdout and " failed" not in ran.stdout, tail
    assert "is not in this repository's history" not in ran.stdout or "GIT_DIR" not in env, tail


@pytest.mark.parametrize(
    ("argv", "compiles"),
    [
        (["dist_info", "--output-dir", "/tmp/x"], False),
        (["--quiet", "egg_info"], False),
        (["bdist_wheel", "--dist-info-dir", "/tmp/x/fhir_gateway-0.1.0.dist-info"], True),
        (["build_ext", "--inplace"], True),
    ],
)
def test_mypyc_runs_only_where_the_extensions_are_built(
    argv: list[str], compiles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip runs setup.py once for the wheel's metadata and once for the wheel: mypyc runs in the second alone (it
    ran in both, doubling the build's time), and without ``GATEWAY_MYPYC=1`` in neither."""
    mypyc_build = pytest.importorskip("mypyc.build")
    calls: list[list[str]] = []
    monkeypatch.setattr(mypyc_build, "mypycify", lambda paths, **options: calls.append(paths) or ["extension"])
    setup = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_modules")
    monkeypatch.setattr(sys, "argv", ["setup.py", *argv])
    monkeypatch.delenv("GATEWAY_MYPYC", raising=False)
    assert setup["_extensions"]() == [] and calls == []
    monkeypatch.setenv("GATEWAY_MYPYC", "1")
    assert setup["_extensions"]() == (["extension"] if compiles else [])
    assert calls == ([setup["MODULES"]] if compiles else [])
