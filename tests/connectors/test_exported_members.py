"""The package's public surface, and the direction of dependencies: the gateway uses connectors, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import connectors

ROOT = Path(__file__).resolve().parents[2]


def test_every_exported_member_exists_and_the_list_is_sorted() -> None:
    assert connectors.__all__ == sorted(connectors.__all__)
    missing = [name for name in connectors.__all__ if not hasattr(connectors, name)]
    assert not missing
    public = {name for name in vars(connectors) if not name.startswith("_") and name[0].isupper()}
    assert public <= set(connectors.__all__), public - set(connectors.__all__)


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_connectors_do_not_import_the_gateway_and_mappers_do_not_import_connectors() -> None:
    assert "gateway" not in _imports("connectors")
    assert not {"gateway", "connectors"} & _imports("mappers")
    assert not {"gateway", "connectors"} & _imports("conformance")
