"""Writing FHIR JSON elements from the platform's compact forms: the inverse of ``mappers.elements``.

FHIR JSON has no nulls, no empty strings and no empty arrays or objects; an absent value is an absent element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mappers.model import CodeableText, Ref


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``target[key]`` unless the value is absent (None, "", [] or {})."""
    if value is not None and value != "" and value != [] and value != {}:
        target[key] = value


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the entries of a flat model dump that have a value (a Coding, Identifier, label or Reference)."""
    return {key: value for key, value in values.items() if value is not None and value != ""}


def reference(value: Ref) -> dict[str, Any]:
    """Write a Reference exactly as the record holds it."""
    return present(value.model_dump())


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
