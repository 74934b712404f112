"""The optional compiled build: ``GATEWAY_MYPYC=1`` compiles the hot modules with mypyc (mypy's compiler).

Everything else about the package is in pyproject.toml; without ``GATEWAY_MYPYC=1`` this file adds nothing and the
build is pure Python, as it always was. The compiled build is the same code; through the whole API it took 11-22%
less CPU per accepted resource (bench/README.md, "Twentieth round"). It needs a C compiler, the Python headers,
``mypy`` and ``setuptools>=77`` where it builds, so it is built without build isolation::

    GATEWAY_MYPYC=1 pip install --no-build-isolation .

``MODULES`` are the validator's walk and the edge's decide phase: code that only walks JSON values, builds plans and
calls no code that tests replace (compiled, a module's calls to its own functions are bound when it is built, and
its classes take no new attributes). ``tests/test_compiled_build.py`` builds the wheel this way and runs the golden
and equivalence tests against it.
"""

from __future__ import annotations

import os
import sys

MODULES = [
    "conformance/bundled.py",
    "conformance/definitions.py",
    "conformance/engine.py",
    "conformance/instance.py",
    "conformance/outcome.py",
    "conformance/primitive.py",
    "conformance/reference.py",
    "conformance/support.py",
    "conformance/validator.py",
    "gateway/encoding.py",
    "gateway/fhir/entries.py",
    "gateway/store/audit.py",
    "gateway/store/decisions.py",
    "gateway/store/ehr_meta.py",
    "gateway/store/indexing.py",
    "gateway/store/keys.py",
    "gateway/store/operation.py",
    "gateway/store/parameters.py",
    "gateway/store/plan.py",
    "gateway/store/references.py",
    "gateway/store/versions.py",
]


# The hooks that only write the package's metadata (pip runs ``dist_info`` in a process of its own before
# ``bdist_wheel``, and ``egg_info`` where it asks for the build's requirements) need no extensions: compiling there
# ran mypyc a second time for nothing, half of a build's time.
METADATA_ONLY = {"dist_info", "egg_info"}


def _extensions() -> list[object]:
    if os.environ.get("GATEWAY_MYPYC") != "1":
        return []
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if command in METADATA_ONLY:
        return []
    from mypyc.build import mypycify

    return list(mypycify(MODULES, opt_level="3"))


if __name__ == "__main__":
    from setuptools import setup

    setup(ext_modules=_extensions())
