"""Invariants of the gateway's resources (app-*, cpl-*, que-*, qrs-*, pat-1), written out by hand.

Each function is one rule of the specification, named by its key. que-12 is checked as its text says ("more than
one enableWhen"), as the reference validator does, not as R4's expression has it (``count() > 2``).
"""

from __future__ import annotations

import re
from typing import Any

from conformance.definitions import TypeDef
from conformance.engine import Run

_QUE_0 = re.compile(r"[A-Z]([A-Za-z0-9_]){0,254}")
_CHOICE_TYPES = frozenset(
    {"choice", "open-choice", "decimal", "integer", "date", "dateTime", "time", "string", "quantity"}
)
_LENGTH_TYPES = frozenset({"boolean", "decimal", "integer", "string", "text", "url", "open-choice"})


def appointment(run: Run, node: dict[str, Any], path: str) -> None:
    """app-2, app-3 and app-4."""
    has_start, has_end = "start" in node, "end" in node
    if has_start != has_end:
        run.error("invariant", path, "app-2: either start and end are specified, or neither")
    if not (has_start and has_end) and node.get("status") not in ("proposed", "cancelled", "waitlist"):
        run.error("invariant", path, "app-3: only proposed or cancelled appointments can be missing start/end dates")
    if "cancelationReason" in node and node.get("status") not in ("noshow", "cancelled"):
        run.error("invariant", path, "app-4: a cancelation reason is only used for appointments that are cancelled")


def appointment_participant(run: Run, node: dict[str, Any], path: str) -> None:
    """app-1: either the type or actor on the participant SHALL be specified."""
    if "type" not in node and "actor" not in node:
        run.error("invariant", path, "app-1: either the type or actor on the participant SHALL be specified")


def care_plan_activity(run: Run, node: dict[str, Any], path: str) -> None:
    """cpl-3: provide a reference or detail, not both."""
    if "detail" in node and "reference" in node:
        run.error("invariant", path, "cpl-3: provide a reference or detail, not both")


def patient_contact(run: Run, node: dict[str, Any], path: str) -> None:
    """pat-1: a contact SHALL have a name, telecom, address or organization."""
    if not ("name" in node or "telecom" in node or "address" in node or "organization" in node):
        run.error(
            "invariant", path, "pat-1: a contact SHALL at least contain a detail or a reference to an organization"
        )


def questionnaire(run: Run, node: dict[str, Any], path: str) -> None:
    """que-0 (a warning) and que-2: linkIds are unique."""
    name = node.get("name")
    if type(name) is str and not _QUE_0.fullmatch(name):
        run.warning("invariant", f"{path}.name", "que-0: the name should be usable as an identifier")
    seen: set[str] = set()
    stack = [node.get("item")]
    while stack:
        items = stack.pop()
        if type(items) is not list:
            continue
        for item in items:
            if type(item) is not dict:
                continue
            link_id = item.get("linkId")
            if type(link_id) is str:
                if link_id in seen:
                    run.error("invariant", path, f"que-2: the linkId '{_shown(link_id)}' is used more than once")
                seen.add(link_id)
            stack.append(item.get("item"))


def questionnaire_item(run: Run, node: dict[str, Any], path: str) -> None:
    """que-1, que-3 to que-6, que-8 to que-13."""
    kind = node.get("type")
    if type(kind) is not str:
        return  # the walk has reported it
    if kind == "group" and "item" not in node:
        run.error("invariant", path, "que-1: group items must have nested items")
    if kind == "display":
        if "item" in node:
            run.error("invariant", path, "que-1: display items cannot have nested items")
        if "code" in node:
            run.error("invariant", path, "que-3: display items cannot have a code")
        if "required" in node or "repeats" in node:
            run.error("invariant", path, "que-6: required and repeats aren't permitted for display items")
        if "readOnly" in node:
            run.error("invariant", path, "que-9: readOnly isn't relevant for display items")
    has_options, has_value_set = "answerOption" in node, "answerValueSet" in node
    if has_options and has_value_set:
        run.error("invariant", path, "que-4: a question cannot have both answerOption and answerValueSet")
    if (has_options or has_value_set) and kind not in _CHOICE_TYPES:
        run.error("invariant", path, "que-5: only 'choice' and 'open-choice' items can have answerValueSet")
    initial = node.get("initial")
    if initial is not None:
        if kind in ("group", "display"):
            run.error("invariant", path, "que-8: initial values can't be specified for groups or display items")
        if has_options:
            run.error("invariant", path, "que-11: if one or more answerOption is present, initial[x] must be missing")
        if type(initial) is list and len(initial) > 1 and node.get("repeats") is not True:
            run.error("invariant", path, "que-13: can only have multiple initial values for repeating items")
    if "maxLength" in node and kind not in _LENGTH_TYPES:
        run.error("invariant", path, "que-10: maximum length can only be declared for simple question types")
    enable_when = node.get("enableWhen")
    if type(enable_when) is list and len(enable_when) > 1 and "enableBehavior" not in node:
        run.error("invariant", path, "que-12: if there are more than one enableWhen, enableBehavior must be specified")


def enable_when(run: Run, node: dict[str, Any], path: str) -> None:
    """que-7: if the operator is 'exists', the value must be a boolean."""
    if node.get("operator") == "exists" and "answerBoolean" not in node:
        run.error("invariant", path, "que-7: if the operator is 'exists', the value must be a boolean")


def response_item(run: Run, node: dict[str, Any], path: str) -> None:
    """qrs-1: nested item can't be beneath both item and answer."""
    if "answer" in node and "item" in node:
        run.error("invariant", path, "qrs-1: nested item can't be beneath both item and answer")


def register(types: dict[str, TypeDef]) -> None:
    """Register these invariants on the type tables."""
    for type_name, invariant in (
        ("Appointment", appointment),
        ("Appointment.participant", appointment_participant),
        ("CarePlan.activity", care_plan_activity),
        ("Patient.contact", patient_contact),
        ("Questionnaire", questionnaire),
        ("Questionnaire.item", questionnaire_item),
        ("Questionnaire.item.enableWhen", enable_when),
        ("QuestionnaireResponse.item", response_item),
    ):
        types[type_name].invariants.append(invariant)


def _shown(value: str) -> str:
    return value if len(value) <= 64 and value.isprintable() else value[:64]
