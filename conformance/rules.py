"""Register the type-specific rules on the type tables, once, and list the steps that run after the walk.

``finishers()`` does it on its first call (it reads the tables then) and caches the result; nothing happens at
import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

from conformance import bundled, coded, datatypes, invariants, profile, questionnaire, resources
from conformance.definitions import Invariant, TypeDef, tables
from conformance.engine import Run, finish, prepare
from conformance.narrative import anchors, internal_links
from conformance.primitive import lenient_uri
from conformance.reference import check_canonical_type, check_reference, finish_scope

# Run after the walk, with the run and the validated JSON.
Finisher = Callable[[Run, object], None]


def _register(types: dict[str, TypeDef], type_name: str, *invariants: Invariant) -> None:
    types[type_name].invariants.extend(invariants)


def _canonical_targets(spec: TypeDef) -> None:
    for element in spec.elements.values():
        if element.type != "canonical" or element.targets is None or element.targets & {"Resource"}:
            continue
        name, targets = element.name, element.targets

        def check(run: Run, node: dict[str, Any], path: str, name: str = name, targets: Any = targets) -> None:
            value = node.get(name)
            if type(value) is list:
                for index, item in enumerate(value):
                    check_canonical_type(run, item, f"{path}.{name}[{index}]", targets)
            else:
                check_canonical_type(run, value, f"{path}.{name}", targets)

        spec.invariants.append(check)


def _nested_extensions(types: dict[str, TypeDef]) -> None:
    """Give extensions inside extensions a type of their own: their url names a part, not a definition."""
    top = types["Extension"]
    nested = TypeDef("Extension", dict(top.elements), top.required, top.choices)
    nested.elements["extension"] = replace(top.elements["extension"], spec=nested)
    top.elements["extension"] = replace(top.elements["extension"], spec=nested)
    types["Extension.extension"] = nested
    top.invariants.append(datatypes.extension)
    nested.invariants.append(datatypes.nested_extension)


def _finish_scopes(run: Run, resource: object) -> None:
    for scope in run.scopes:
        if scope.contained or scope.local:  # else no fragment reference and nothing contained: nothing to check
            finish_scope(run, scope)


def _finish_links(run: Run, resource: object) -> None:
    """A narrative's internal links (``href="#x"``) must land on an id or anchor in the resource or its Bundle."""
    links = run.found.get("#links")
    if not links:
        return
    targets: set[str] = set()
    stack = [resource]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, value in item.items():
                if key == "id" and type(value) is str:
                    targets.add(value)
                elif key == "div" and type(value) is str:
                    targets.update(anchors(value))
                else:
                    stack.append(value)
        elif type(item) is list:
            stack.extend(item)
    for node, path in links:
        for fragment in internal_links(node["div"]):
            if fragment not in targets:
                run.error("invalid", path, f"The narrative's link to '#{fragment[:64]}' does not resolve")


# Registering mutates the shared type tables: two threads' first validations must not both do it.
_REGISTERING = threading.Lock()


def finishers() -> tuple[Finisher, ...]:
    """Register every rule on the type tables (on the first call) and return the steps that run after the walk."""
    global _FINISHERS
    if _FINISHERS is not None:
        return _FINISHERS
    with _REGISTERING:
        _FINISHERS = _registered()
        return _FINISHERS


_FINISHERS: tuple[Finisher, ...] | None = None


@cache
def _registered() -> tuple[Finisher, ...]:
    types = tables().types
    _nested_extensions(types)
    _register(types, "Period", datatypes.period)
    for quantity in ("Quantity", "SimpleQuantity", "Age", "Count", "Distance"):
        _register(types, quantity, datatypes.quantity)
    _register(types, "Duration", datatypes.duration)
    _register(types, "Attachment", datatypes.attachment)
    _register(types, "ContactPoint", datatypes.contact_point)
    _register(types, "Ratio", datatypes.ratio)
    _register(types, "Timing.repeat", datatypes.timing_repeat)
    _register(types, "Narrative", datatypes.narrative)
    for spec in list(types.values()):
        _canonical_targets(spec)
    resources.register(types)
    coded.register(types, tables())
    invariants.register(types)
    bundled.register(types)
    questionnaire.register(types)
    prepare(types, {"Reference": check_reference})
    coded.install(types, tables())
    types["Bundle.entry"].elements["fullUrl"].check = lenient_uri
    finish(types, check_reference)
    return (_finish_scopes, _finish_links, bundled.finish, questionnaire.finish, profile.finish)
