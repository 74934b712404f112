"""fhir.resources' models of the FHIR the gateway writes, and the R4 resource types.

This is the only module that imports ``fhir.resources`` (and decides R4 vs R4B). fhir.resources ships no R4
package; its R4B (4.3.0) models are the closest. Nothing is imported from it until a model is first used: the
API's start-up and the inbound path (checked by the gateway's own validator, ``conformance.validator``, which
walks the R4 tables of ``definitions``) never load it. Model classes are attributes of this module, loaded on
first access (``fhir_models.Communication``); import this module, not names from it.

Where the gateway writes FHIR (write-backs), ``written`` constructs the resource as its R4B model, lets typed
changes apply to it, and returns the model's own JSON export; ``refusals`` is the model's verdict on JSON to send.
The benchmark and the tests compare the validator with ``model_class`` parsing.

R4 and R4B, for the types the gateway writes (Communication, QuestionnaireResponse, Appointment, CarePlan, their
backbone elements and the data types in them), compared element by element with the R4 tables (name,
cardinality, type, reference targets, required codes): the same, except ``Extension.value[x]``. R4's
``valueMeta`` is not in R4B, so the model refuses an extension that carries one (said so in the issue); R4B's
``valueCodeableReference`` and ``valueRatioRange`` are not R4, and the R4 validator, which always runs after the
model, refuses them. Elsewhere R4B drops or redesigns R4 types (Evidence, EvidenceVariable: no model here).
"""

from __future__ import annotations

import importlib
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue

if TYPE_CHECKING:
    from fhir.resources.R4B.appointment import Appointment
    from fhir.resources.R4B.attachment import Attachment
    from fhir.resources.R4B.careplan import CarePlan, CarePlanActivity, CarePlanActivityDetail
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.communication import Communication, CommunicationPayload
    from fhir.resources.R4B.domainresource import DomainResource
    from fhir.resources.R4B.period import Period
    from fhir.resources.R4B.questionnaireresponse import (
        QuestionnaireResponse,
        QuestionnaireResponseItem,
        QuestionnaireResponseItemAnswer,
    )

__all__ = [
    "R4_RESOURCE_TYPES",
    "Appointment",
    "Attachment",
    "CarePlan",
    "CarePlanActivity",
    "CarePlanActivityDetail",
    "CodeableConcept",
    "Communication",
    "CommunicationPayload",
    "DomainResource",
    "Period",
    "QuestionnaireResponse",
    "QuestionnaireResponseItem",
    "QuestionnaireResponseItemAnswer",
    "Refused",
    "model_class",
    "refusals",
    "written",
]

_PACKAGE: Final = "fhir.resources.R4B"
# The model classes this module hands out, by the fhir.resources module that defines each.
_MODULES: Final[Mapping[str, str]] = {
    "Appointment": "appointment",
    "Attachment": "attachment",
    "CarePlan": "careplan",
    "CarePlanActivity": "careplan",
    "CarePlanActivityDetail": "careplan",
    "CodeableConcept": "codeableconcept",
    "Communication": "communication",
    "CommunicationPayload": "communication",
    "DomainResource": "domainresource",
    "Period": "period",
    "QuestionnaireResponse": "questionnaireresponse",
    "QuestionnaireResponseItem": "questionnaireresponse",
    "QuestionnaireResponseItemAnswer": "questionnaireresponse",
}
# R4B keeps these names but models a different structure (the R4B evidence redesign).
_INCOMPATIBLE = frozenset({"Evidence", "EvidenceVariable"})
_ISSUE_CODES: Final[Mapping[str, str]] = {"missing": "required", "extra_forbidden": "structure"}

M = TypeVar("M", bound="DomainResource")


def __getattr__(name: str) -> Any:
    """Load a model class on first access (PEP 562), so that importing this module loads no model."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = getattr(importlib.import_module(f"{_PACKAGE}.{module}"), name)
    globals()[name] = found
    return found


class Refused(ValueError):
    """fhir.resources' R4B model refuses a resource: one issue per element at fault."""

    def __init__(self, resource_type: str, issues: Sequence[Issue]) -> None:
        super().__init__(f"the R4B model refuses the {resource_type}")
        self.issues = list(issues)


def model_class(resource_type: str) -> type[BaseModel] | None:
    """Return the R4B model class for an R4 resource type, or None when R4B has no model that fits."""
    if resource_type not in R4_RESOURCE_TYPES or resource_type in _INCOMPATIBLE:
        return None  # checked before the cache, so that arbitrary input cannot grow it
    return _resource_model(resource_type)


@cache
def _resource_model(resource_type: str) -> type[BaseModel] | None:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return typing.cast(type[BaseModel], get_fhir_model_class(resource_type))
    except ValueError:
        return None


def written(resource: Mapping[str, Any], model: type[M], *changes: Callable[[M], None]) -> dict[str, Any]:
    """Construct ``resource`` as its R4B ``model``, apply ``changes`` to the typed object in order, and return the
    model's own JSON export (parsed). Raise Refused naming each element the model refuses, in the resource or
    in what a change set."""
    name = model.__name__
    typed = _model_of(name, lambda: model.model_validate(resource))
    try:
        for change in changes:
            change(typed)
    except ValidationError as exc:  # a change the model's assignment checks refuse
        raise Refused(name, _issues(name, exc)) from None
    exported: dict[str, Any] = json.loads(_model_of(name, typed.model_dump_json))
    return exported


def refusals(resource: object) -> list[Issue]:
    """Return what fhir.resources' R4B model refuses in a parsed JSON resource ([] when its model takes it)."""
    rtype = resource.get("resourceType") if isinstance(resource, Mapping) else None
    model = model_class(rtype) if isinstance(rtype, str) else None
    if model is None:
        return [Issue("error", "not-supported", None, "fhir.resources has no R4B model for this resource")]
    try:
        _model_of(str(rtype), lambda: model.model_validate(resource))
    except Refused as exc:
        return exc.issues
    return []


T = TypeVar("T")


def _model_of(resource_type: str, step: Callable[[], T]) -> T:
    """Run one step of the model on its input (construct, export); raise Refused whatever way it fails."""
    try:
        return step()
    except ValidationError as exc:
        raise Refused(resource_type, _issues(resource_type, exc)) from None
    except Exception as exc:  # fhir.resources fails with KeyError or TypeError on some input (a typeless contained
        # resource): that is a refusal too, never a crash; the type name carries no data
        diagnostics = f"fhir.resources (R4B model) failed on this input ({type(exc).__name__})"
        raise Refused(resource_type, [Issue("fatal", "exception", resource_type, diagnostics)]) from None


def _issues(resource_type: str, error: ValidationError) -> list[Issue]:
    """Translate the model's errors into issues: the element's FHIRPath, never the value."""
    found = []
    for detail in error.errors(include_url=False, include_input=False):
        where = [str(part) for part in detail["loc"] if part != "resource_type"]
        message = str(detail["msg"]).removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden" and where and where[-1] == "valueMeta":
            message = "R4 allows Extension.valueMeta, but R4B has no such element, so its model cannot write it"
        elif detail["type"] == "extra_forbidden":
            message = "not an element of the R4B model"
        found.append(
            Issue("error", _ISSUE_CODES.get(detail["type"], "value"), _path(resource_type, where),
                  f"fhir.resources (R4B model): {message}")
        )  # fmt: skip
    return found


def _path(resource_type: str, parts: Sequence[str]) -> str:
    path = resource_type
    for part in parts:
        path += f"[{part}]" if part.isdigit() else f".{part}"
    return path
