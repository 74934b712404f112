"""The FHIR types the worker maps: every family, listed here by hand, by FHIR type, and the records served."""

from __future__ import annotations

from typing import Any, Final

from mappers import appointment, goal, message, patient, provider, survey, survey_response, treatment_plan
from mappers.family import Aggregate, Family, IndexFields, canonical_key, no_needs
from mappers.model import Record

__all__ = ["FAMILIES", "MAPPED", "Aggregate", "Family", "IndexFields", "canonical_key", "no_needs", "record_routes"]

# Every mapped family, by hand: a new family is added here; nothing is discovered at import time.
FAMILIES: Final[tuple[Family[Any], ...]] = (
    appointment.FAMILY,
    patient.FAMILY,
    provider.FAMILY,
    provider.ROLE_FAMILY,
    message.FAMILY,
    treatment_plan.FAMILY,
    goal.FAMILY,
    survey.FAMILY,
    survey_response.FAMILY,
)

MAPPED: Final[dict[str, Family[Any]]] = {family.fhir_type: family for family in FAMILIES}


def record_routes() -> dict[str, tuple[str, type[Record]]]:
    """Return route -> (record type, model) for every record the platform API serves."""
    routes: dict[str, tuple[str, type[Record]]] = {}
    for family in MAPPED.values():
        routes[family.route] = (family.record_type, family.model)
        if family.aggregate is not None:
            routes[family.aggregate.route] = (family.aggregate.record_type, family.aggregate.model)
    return routes
