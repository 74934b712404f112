"""Recipes that break one R4 invariant on an object of its type (for the mutation tests)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any


def recipes() -> dict[str, tuple[str, Callable[[dict[str, Any]], bool]]]:
    """Return invariant key -> (type key, a change that breaks it on an object of that type, False if it cannot)."""

    def period(node: dict[str, Any]) -> bool:
        if "start" not in node:
            return False
        node["end"] = "1900-01-01"
        return True

    def quantity(node: dict[str, Any]) -> bool:
        if "code" not in node:
            return False
        node.pop("system", None)
        return True

    def contact_point(node: dict[str, Any]) -> bool:
        if "value" not in node:
            return False
        node.pop("system", None)
        return True

    def attachment(node: dict[str, Any]) -> bool:
        if "data" not in node:
            return False
        node.pop("contentType", None)
        return True

    def extension(node: dict[str, Any]) -> bool:
        if "extension" in node:
            node["valueString"] = "x"
        else:
            node["extension"] = [{"url": "http://example.org/part", "valueString": "x"}]
        return True

    def narrative(node: dict[str, Any]) -> bool:
        node["div"] = '<div xmlns="http://www.w3.org/1999/xhtml">  </div>'
        return True

    def appointment(node: dict[str, Any]) -> bool:
        if "start" not in node:
            return False
        node.pop("end", None)
        return True

    def participant(node: dict[str, Any]) -> bool:
        node.pop("type", None)
        node.pop("actor", None)
        node.setdefault("status", "accepted")
        return True

    def patient_contact(node: dict[str, Any]) -> bool:
        for key in ("name", "telecom", "address", "organization"):
            node.pop(key, None)
        node.setdefault("gender", "female")
        return True

    def observation(node: dict[str, Any]) -> bool:
        if not any(key.startswith("value") for key in node):
            return False
        node["dataAbsentReason"] = {"text": "lost"}
        return True

    def condition(node: dict[str, Any]) -> bool:
        if "clinicalStatus" not in node:
            return False
        node["verificationStatus"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}
            ]
        }
        return True

    def allergy(node: dict[str, Any]) -> bool:
        node.pop("clinicalStatus", None)
        node["verificationStatus"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}
            ]
        }
        return True

    def organization(node: dict[str, Any]) -> bool:
        node.pop("identifier", None)
        node.pop("name", None)
        node.pop("_name", None)
        node["active"] = True
        return True

    def questionnaire_item(node: dict[str, Any]) -> bool:
        node["type"] = "group"
        node.pop("item", None)
        return True

    def care_plan_activity(node: dict[str, Any]) -> bool:
        node["reference"] = {"reference": "ServiceRequest/x"}
        node["detail"] = {"status": "scheduled"}
        return True

    def reference(node: dict[str, Any]) -> bool:
        node["reference"] = "#not-contained"
        return True

    def timing(node: dict[str, Any]) -> bool:
        if "period" not in node:
            return False
        node.pop("periodUnit", None)
        return True

    def element(node: dict[str, Any]) -> bool:
        for key in list(node):
            del node[key]
        node["id"] = "only-an-id"
        return True

    def range_(node: dict[str, Any]) -> bool:
        node["low"] = {"value": 10, "system": "http://unitsofmeasure.org", "code": "mg"}
        node["high"] = {"value": 5, "system": "http://unitsofmeasure.org", "code": "mg"}
        return True

    def abatement(node: dict[str, Any]) -> bool:
        node["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        }
        node.pop("verificationStatus", None)
        node["abatementString"] = "over"
        for key in [k for k in node if k.startswith("abatement") and k != "abatementString"]:
            del node[key]
        return True

    def home(element: str) -> Callable[[dict[str, Any]], bool]:
        def change(node: dict[str, Any]) -> bool:
            if not node.get(element):
                return False
            node[element][0]["use"] = "home"
            return True

        return change

    def simple_quantity(node: dict[str, Any]) -> bool:
        node["comparator"] = "<"
        return True

    def reference_range(node: dict[str, Any]) -> bool:
        for key in ("low", "high", "text"):
            node.pop(key, None)
        node["appliesTo"] = [{"text": "adults"}]
        return True

    def goal_target(node: dict[str, Any]) -> bool:
        node.pop("measure", None)
        if not any(key.startswith("detail") for key in node):
            node["detailString"] = "less"
        return True

    def component(node: dict[str, Any]) -> bool:
        if not node.get("component") or "code" not in node:
            return False
        if not any(key.startswith("value") for key in node):
            node["valueString"] = "x"
        node["component"][0]["code"] = copy.deepcopy(node["code"])
        return True

    return {
        "con-4": ("Condition", abatement),
        "org-2": ("Organization", home("address")),
        "org-3": ("Organization", home("telecom")),
        "sqty-1": ("SimpleQuantity", simple_quantity),
        "obs-3": ("Observation.referenceRange", reference_range),
        "gol-1": ("Goal.target", goal_target),
        "obs-7": ("Observation", component),
        "per-1": ("Period", period),
        "qty-3": ("Quantity", quantity),
        "cpt-2": ("ContactPoint", contact_point),
        "att-1": ("Attachment", attachment),
        "ext-1": ("Extension", extension),
        "txt-2": ("Narrative", narrative),
        "app-2": ("Appointment", appointment),
        "app-1": ("Appointment.participant", participant),
        "pat-1": ("Patient.contact", patient_contact),
        "obs-6": ("Observation", observation),
        "con-5": ("Condition", condition),
        "ait-1": ("AllergyIntolerance", allergy),
        "org-1": ("Organization", organization),
        "que-1": ("Questionnaire.item", questionnaire_item),
        "cpl-3": ("CarePlan.activity", care_plan_activity),
        "ref-1": ("Reference", reference),
        "tim-2": ("Timing.repeat", timing),
        "ele-1": ("CodeableConcept", element),
        "rng-2": ("Range", range_),
    }
