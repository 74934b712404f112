"""The FHIR types the worker maps, each with its record model, mapper, classifier and index fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mappers import appointment
from mappers.context import MapContext
from mappers.model import Appointment, Record

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Family(Generic[R]):
    """Everything the worker and the platform API need to handle one mapped FHIR type."""

    fhir_type: str
    record_type: str
    # The platform API path segment: /platform/v1/{route}.
    route: str
    # The record class, to read a stored record back before classifying the next version against it.
    model: type[R]
    to_platform: Callable[[Mapping[str, Any], MapContext], R]
    classify: Callable[[R | None, R], str | None]
    deleted_record: Callable[[R, MapContext], R]
    index_fields: Callable[[R], dict[str, str | float | None]]


MAPPED: dict[str, Family[Any]] = {
    "Appointment": Family(
        fhir_type="Appointment",
        record_type="appointment",
        route="appointments",
        model=Appointment,
        to_platform=appointment.to_platform,
        classify=appointment.classify,
        deleted_record=appointment.deleted_record,
        index_fields=appointment.index_fields,
    ),
}
