"""The R4 invariants compiled from their FHIRPath (``r4_invariants``, generated), registered on the type tables.

Each runs when the walk leaves an object of the type it is registered on, for the invariant's element below that
object (or the object itself), and reports an error with the invariant's key and text where its expression is
false. An expression that is empty (it reads values FHIRPath cannot compare) or that cannot be evaluated on JSON
of the wrong shape (which the walk reports) is not reported.
"""

from __future__ import annotations

from typing import Any

from conformance.definitions import Invariant, TypeDef
from conformance.engine import Run

_FALSE = [False]


def register(types: dict[str, TypeDef]) -> None:
    """Register every compiled invariant on its type."""
    from conformance.r4_invariants import COMPILED  # generated and large: read with the tables, not at import

    for type_key, steps, key, text, _expression, function in COMPILED:
        types[type_key].invariants.append(_invariant(steps, f"{key}: {text}", function))


def _invariant(steps: tuple[tuple[str, ...], ...], message: str, function: Any) -> Invariant:
    if not steps:

        def whole(run: Run, node: dict[str, Any], path: str) -> None:
            if _false(function, node, node):
                run.error("invariant", path, message)

        return whole

    def below(run: Run, node: dict[str, Any], path: str) -> None:
        for item, here in _items(node, path, steps):
            if _false(function, item, node):
                run.error("invariant", here, message)

    return below


def _items(node: dict[str, Any], path: str, steps: tuple[tuple[str, ...], ...]) -> list[tuple[Any, str]]:
    level: list[tuple[Any, str]] = [(node, path)]
    for names in steps:
        following: list[tuple[Any, str]] = []
        for item, here in level:
            if type(item) is not dict:
                continue
            for name in names:
                value = item.get(name)
                if type(value) is list:
                    following.extend((v, f"{here}.{name}[{i}]") for i, v in enumerate(value) if v is not None)
                elif value is not None:
                    following.append((value, f"{here}.{name}"))
        level = following
    return level


def _false(function: Any, node: Any, owner: dict[str, Any]) -> bool:
    try:
        return bool(function(node, owner) == _FALSE)
    except Exception:  # JSON of the wrong shape, which the walk reports; an invariant must never crash the edge
        return False
