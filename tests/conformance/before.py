"""The validator as it was before the walk was made faster (issue #13), for equivalence tests.

``validator()`` reads the ``conformance`` package at ``BEFORE`` out of this repository's git history, writes it
under a private name (``conformance_before``, every ``conformance`` import renamed) to a temporary folder, imports
it and returns its ``validate_resource``. It has its own tables, rules and walk: nothing is shared with the
current package. The test is skipped where git or that commit is not at hand (an archive, a shallow clone).
"""

from __future__ import annotations

import atexit
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

# main before issue #13's validator round: the walk every verdict is compared with.
BEFORE = "84f3f51aaaeae99fc5cb76633254c084d3e578c9"
NAME = "conformance_before"
_ROOT = Path(__file__).resolve().parents[2]
_IMPORT = re.compile(r"\b(from|import) conformance\b")


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(_ROOT), *args], check=True, capture_output=True).stdout


@cache
def _load() -> Any:
    if shutil.which("git") is None:
        return "git is not installed"
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{BEFORE}^{{commit}}").decode().strip()
        names = _git("ls-tree", "--name-only", commit, "conformance/").decode().split()
    except subprocess.CalledProcessError:
        return f"commit {BEFORE[:7]} is not in this repository's history"
    folder = Path(tempfile.mkdtemp(prefix="validator-before-"))
    atexit.register(shutil.rmtree, folder, True)
    package = folder / NAME
    package.mkdir()
    for name in names:
        data = _git("show", f"{commit}:{name}")
        target = package / Path(name).name
        if target.suffix == ".py":
            target.write_text(_IMPORT.sub(lambda m: f"{m.group(1)} {NAME}", data.decode("utf-8")), encoding="utf-8")
        else:
            target.write_bytes(data)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(f"{NAME}.validator")
    finally:
        sys.path.remove(str(folder))
    return module


def module(name: str = "validator") -> Any:
    """Return a module of the old package (the test is skipped when it cannot be read from git)."""
    found = _load()
    if isinstance(found, str):
        pytest.skip(found)
    return importlib.import_module(f"{NAME}.{name}")


def validator() -> Callable[..., Any]:
    """Return the old ``validate_resource`` (the test is skipped when it cannot be read from git)."""
    return module().validate_resource  # type: ignore[no-any-return]
