"""The per-tenant validation policy: ``strict`` refuses any error; ``lenient`` accepts what maps safely.

Real EHR data is messy, and a clinic's feed must not stop on a cosmetic error. Under ``lenient`` a resource
whose errors all lie in elements no mapping reads is accepted; its issues are stored beside the version and
counted in ``gateway_lenient_accepted_total``. What an error "touches" is the top-level element its expression
names (``Appointment.priority`` touches ``priority``; ``Bundle.entry[3].resource.onsetDateTime`` touches
``onsetDateTime`` of that entry's resource). An error is tolerated only when:

- it is an ``error``, not ``fatal``, and names an element below the resource root (an issue on the whole resource,
  such as a root invariant, names no element it could be confined to);
- that element is not one every reader depends on: ``id``, ``meta`` (security labels travel to every record),
  ``text`` (narrative safety: unsafe XHTML is never stored), ``implicitRules`` and ``modifierExtension`` (they
  change what the resource means);
- for a mapped type, the element is not one its mapper reads (``MAPPED_ELEMENTS``: the top-level elements each
  family's ``to_platform`` reads, kept in step with the mappers by ``tests/gateway/test_policy.py``, which
  removes every other element of real resources and checks the record does not change);
- for a type no family maps, the error is not structural: an unknown element, a wrong JSON shape or a missing
  required element (issue codes ``structure``, ``required``) make the resource something other than what the
  sender meant, so it is refused; a bad value, code, invariant or reference inside an element is kept with
  its issues, since only the stored FHIR is served for such types.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from conformance.outcome import Issue

Policy = Literal["strict", "lenient"]

_ALWAYS_READ = frozenset({"id", "meta", "text", "implicitRules", "modifierExtension", "resourceType"})
_STRUCTURAL = frozenset({"structure", "required", "exception"})
_ELEMENT = re.compile(r"^_?([A-Za-z][A-Za-z0-9]*)")

# The top-level elements each mapped family's mapper reads (besides _ALWAYS_READ). ``extension`` is listed where
# the mapper reads top-level extensions (vendor practice/department, Appointment replaces/virtualService).
MAPPED_ELEMENTS: dict[str, frozenset[str]] = {
    "Appointment": frozenset(
        {
            "appointmentType", "basedOn", "cancelationReason", "cancellationReason", "comment", "description",
            "end", "extension", "identifier", "minutesDuration", "participant", "patientInstruction", "reasonCode",
            "reasonReference", "replaces", "serviceCategory", "serviceType", "slot", "specialty", "start",
            "status", "virtualService",
        }
    ),
    "Patient": frozenset(
        {
            "active", "birthDate", "communication", "deceasedBoolean", "deceasedDateTime", "extension", "gender",
            "generalPractitioner", "identifier", "link", "managingOrganization", "name", "telecom",
        }
    ),
    "Practitioner": frozenset({"active", "gender", "identifier", "name", "qualification", "telecom"}),
    "PractitionerRole": frozenset(
        {
            "active", "code", "healthcareService", "identifier", "location", "organization", "practitioner",
            "specialty", "telecom",
        }
    ),
    "Communication": frozenset(
        {
            "category", "encounter", "identifier", "inResponseTo", "partOf", "payload", "priority", "received",
            "recipient", "sender", "sent", "status", "subject", "topic",
        }
    ),
    "CarePlan": frozenset(
        {
            "activity", "addresses", "careTeam", "category", "contained", "description", "goal", "identifier",
            "intent", "language", "period", "status", "subject", "title",
        }
    ),
    "Goal": frozenset(
        {
            "achievementStatus", "addresses", "category", "description", "identifier", "language",
            "lifecycleStatus", "note", "priority", "startDate", "statusDate", "subject", "target",
        }
    ),
    "Questionnaire": frozenset(
        {
            "code", "date", "description", "identifier", "item", "name", "status", "subjectType", "title", "url",
            "version",
        }
    ),
    "QuestionnaireResponse": frozenset(
        {
            "author", "authored", "basedOn", "contained", "encounter", "identifier", "item", "partOf",
            "questionnaire", "source", "status", "subject",
        }
    ),
}  # fmt: skip


def touched_element(expression: str | None, root: str) -> str | None:
    """Return the top-level element an issue's expression names below ``root``, or None when it names none."""
    if not expression or not expression.startswith(f"{root}."):
        return None
    match = _ELEMENT.match(expression[len(root) + 1 :])
    return match.group(1) if match else None


def tolerated(issue: Issue, rtype: str, root: str | None = None) -> bool:
    """Tell whether ``lenient`` may accept a resource of ``rtype`` despite ``issue`` (see the module docstring)."""
    if issue.severity not in ("error", "fatal"):
        return True
    if issue.severity == "fatal":
        return False
    element = touched_element(issue.expression, rtype if root is None else root)
    if element is None or element in _ALWAYS_READ:
        return False
    mapped = MAPPED_ELEMENTS.get(rtype)
    if mapped is not None:
        return element not in mapped
    return issue.code not in _STRUCTURAL


def accepts(policy: str, rtype: str, issues: Sequence[Issue], root: str | None = None) -> bool:
    """Tell whether a resource with these issues is accepted under ``policy``."""
    failing = [i for i in issues if i.severity in ("error", "fatal")]
    if not failing:
        return True
    return policy == "lenient" and all(tolerated(i, rtype, root) for i in failing)
