"""The FHIR types the worker maps: every family module's ``FAMILIES``, by FHIR type, and the records served."""

from __future__ import annotations

import importlib
from typing import Any

from mappers.family import Aggregate, Family, IndexFields, canonical_key, no_needs
from mappers.model import Record

__all__ = ["MAPPED", "Aggregate", "Family", "IndexFields", "canonical_key", "no_needs", "record_routes"]

_MODULES = ("appointment", "patient", "provider", "message", "treatment_plan", "survey", "survey_response")


def _gather() -> dict[str, Family[Any]]:
    modules: list[Any] = []
    for name in _MODULES:
        try:
            modules.append(importlib.import_module(f"mappers.{name}"))
        except ModuleNotFoundError as exc:  # pragma: no cover - only while the families are being written
            if exc.name != f"mappers.{name}":
                raise
    return {family.fhir_type: family for module in modules for family in module.FAMILIES}


MAPPED: dict[str, Family[Any]] = _gather()


def record_routes() -> dict[str, tuple[str, type[Record]]]:
    """Return route -> (record type, model) for every record the platform API serves."""
    routes: dict[str, tuple[str, type[Record]]] = {}
    for family in MAPPED.values():
        routes[family.route] = (family.record_type, family.model)
        if family.aggregate is not None:
            routes[family.aggregate.route] = (family.aggregate.record_type, family.aggregate.model)
    return routes
