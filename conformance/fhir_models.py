"""The R4 resource types, and the fhir.resources models the benchmark compares the validator with.

This is the only module that imports ``fhir.resources`` (and decides R4 vs R4B). fhir.resources ships no R4
package; its R4B (4.3.0) models are the closest, so ``model_class`` gives no model for the R4 types R4B dropped or
redesigned (Evidence, EvidenceVariable). The validator does not use these models: it walks the R4 tables of
``definitions``, which is where ``R4_RESOURCE_TYPES`` comes from.
"""

from __future__ import annotations

import typing
from functools import cache

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel

from conformance.definitions import R4_RESOURCE_TYPES

__all__ = ["R4_RESOURCE_TYPES", "model_class"]

# R4B keeps these names but models a different structure (the R4B evidence redesign).
_INCOMPATIBLE = frozenset({"Evidence", "EvidenceVariable"})


def model_class(resource_type: str) -> type[BaseModel] | None:
    """Return the R4B model class for an R4 resource type, or None when R4B has no model that fits."""
    if resource_type not in R4_RESOURCE_TYPES or resource_type in _INCOMPATIBLE:
        return None  # checked before the cache, so that arbitrary input cannot grow it
    return _resource_model(resource_type)


@cache
def _resource_model(resource_type: str) -> type[BaseModel] | None:
    try:
        return typing.cast(type[BaseModel], get_fhir_model_class(resource_type))
    except ValueError:
        return None
