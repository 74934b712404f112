"""The published record schema in docs/ is the one the platform API serves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "platform_schema.py"


def test_docs_platform_schema_is_current() -> None:
    spec = importlib.util.spec_from_file_location("platform_schema", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT.read_text(encoding="utf-8") == module.render(), "run: python tools/platform_schema.py"
