"""Writing FHIR JSON elements from the platform's compact forms: the inverse of ``mappers.elements``.

Every family's ``to_fhir`` writes through these. FHIR JSON has no nulls, no empty strings and no empty arrays or
objects; an absent value is an absent element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

from mappers.model import CodeableText, Identifier, Ref, SecurityLabel


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``target[key]`` unless the value is absent (None, "", [] or {})."""
    if value is not None and value != "" and value != [] and value != {}:
        target[key] = value


def compact(**elements: Any) -> dict[str, Any]:
    """Return an element of the given children that have a value (see ``put``)."""
    found: dict[str, Any] = {}
    for key, value in elements.items():
        put(found, key, value)
    return found


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the entries of a flat model dump that have a value (a Coding, Identifier, label or Reference)."""
    return {key: value for key, value in values.items() if value is not None and value != ""}


@overload
def reference(value: Ref) -> dict[str, Any]: ...
@overload
def reference(value: None) -> None: ...
@overload
def reference(value: Ref | None) -> dict[str, Any] | None: ...
def reference(value: Ref | None) -> dict[str, Any] | None:
    """Write a Reference exactly as the record holds it (None for none)."""
    return present(value.model_dump()) if value is not None else None


def references(values: Iterable[Ref]) -> list[dict[str, Any]]:
    """Write every Reference of a list."""
    return [present(value.model_dump()) for value in values]


def concept(value: CodeableText | None) -> dict[str, Any] | None:
    """Write a CodeableConcept, or None when it says nothing."""
    if value is None:
        return None
    written: dict[str, Any] = {}
    put(written, "coding", [c for c in (present(c.model_dump()) for c in value.codings) if c])
    put(written, "text", value.text)
    return written or None


def concepts(values: Iterable[CodeableText]) -> list[dict[str, Any]]:
    """Write every CodeableConcept that says something."""
    return [written for written in map(concept, values) if written]


def identifiers(values: Iterable[Identifier]) -> list[dict[str, Any]]:
    """Write every Identifier."""
    return [present(value.model_dump()) for value in values]


def meta(security: Sequence[SecurityLabel]) -> dict[str, Any] | None:
    """Write the ``meta`` of a write-back: every label of what it came from (the EHR must restrict it alike).

    A label read without a code keeps none: "" is not a FHIR code, and reading absence back gives "" again.
    """
    return {"security": [present(label.model_dump()) for label in security]} if security else None
