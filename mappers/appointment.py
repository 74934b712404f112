"""FHIR R4 Appointment to the platform's Appointment record, and the change a new version makes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from mappers.context import MapContext
from mappers.elements import (
    concept,
    concepts,
    identifiers,
    instant,
    items,
    ref,
    refs,
    security_labels,
    text,
    utc_text,
)
from mappers.errors import MissingId, TenantMismatch, WrongResourceType
from mappers.family import Family, IndexFields
from mappers.model import (
    Appointment,
    AppointmentStatus,
    CodeableText,
    Participant,
    ParticipantKind,
)

FHIR_TYPE: Final = "Appointment"

STATUS: Final[Mapping[str, AppointmentStatus]] = {
    "proposed": "requested",
    "pending": "requested",
    "waitlist": "waitlisted",
    "booked": "scheduled",
    "arrived": "checked_in",
    "checked-in": "checked_in",
    "fulfilled": "completed",
    "noshow": "no_show",
    "cancelled": "cancelled",
    "entered-in-error": "void",
}

_KIND: Final[Mapping[str, ParticipantKind]] = {
    "Patient": "patient",
    "Practitioner": "practitioner",
    "PractitionerRole": "practitioner_role",
    "RelatedPerson": "related_person",
    "Location": "location",
    "Device": "device",
    "HealthcareService": "healthcare_service",
}

# Relative, absolute and versioned literal references all end in Type/id[/_history/vid].
_REFERENCE: Final = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9.\-]{1,64}(?:/_history/[A-Za-z0-9.\-]{1,64})?$", re.ASCII
)

_EVENT_FOR_STATUS: Final[Mapping[str, str]] = {
    "cancelled": "appointment.cancelled",
    "no_show": "appointment.no_show",
    "completed": "appointment.completed",
}
# A start that moves on an appointment in one of these states is a correction, not a new time to attend.
_SETTLED: Final = frozenset({"cancelled", "no_show", "completed", "void"})
# Source fields that change with every stored version even when nothing the platform shows has changed.
_VERSION_FIELDS: Final = frozenset({"version_id", "last_updated", "fhir_url", "ehr_version_id", "ehr_last_updated"})


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Appointment:
    """Map a FHIR R4 Appointment, parsed from JSON, to the platform's Appointment record."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != FHIR_TYPE:
        got = resource.get("resourceType") if isinstance(resource, Mapping) else type(resource).__name__
        raise WrongResourceType(f"expected an Appointment, got {str(got)[:64]!r}")
    fhir_id = resource.get("id")
    if not isinstance(fhir_id, str) or not fhir_id:
        raise MissingId("an Appointment without an id cannot be mapped")

    fhir_status = resource.get("status")
    fhir_status = fhir_status if isinstance(fhir_status, str) else ""
    start = instant(resource.get("start"), ctx.timezone)
    end = instant(resource.get("end"), ctx.timezone)
    participants = [_participant(p) for p in items(resource.get("participant"))]
    return Appointment(
        id=fhir_id,
        status=STATUS.get(fhir_status.strip().lower(), "unknown"),
        fhir_status=fhir_status,
        start=utc_text(start),
        end=utc_text(end),
        timezone=ctx.timezone,
        minutes_duration=_minutes(resource.get("minutesDuration"), start, end),
        patient=next((p.actor for p in participants if p.kind == "patient"), None),
        practitioners=[
            p.actor for p in participants if p.actor is not None and p.kind in ("practitioner", "practitioner_role")
        ],
        participants=participants,
        service_type=concepts(resource.get("serviceType")),
        appointment_type=concept(resource.get("appointmentType")),
        service_category=concepts(resource.get("serviceCategory")),
        specialty=concepts(resource.get("specialty")),
        reason=_reasons(resource),
        description=text(resource.get("description")),
        patient_instruction=text(resource.get("patientInstruction")),
        comment=text(resource.get("comment")),
        # R4 spells it with one "l"; R5 and some EHRs with two.
        cancellation_reason=concept(resource.get("cancelationReason") or resource.get("cancellationReason")),
        based_on=refs(resource.get("basedOn")),
        slot=refs(resource.get("slot")),
        security=security_labels(resource),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def deleted_record(previous: Appointment, ctx: MapContext) -> Appointment:
    """Return the previous record as a tombstone of the stored version that deleted it."""
    if previous.source.tenant != ctx.tenant:
        raise TenantMismatch(f"Appointment/{previous.id} belongs to another tenant")
    source = ctx.source(previous.source.fhir_type, previous.source.fhir_id, previous.source.identifiers)
    return previous.model_copy(update={"deleted": True, "source": source}, deep=True)


def classify(previous: Appointment | None, current: Appointment) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    event = _event(previous, current)
    return [event] if event else []


def _event(previous: Appointment | None, current: Appointment) -> str | None:
    if current.deleted:
        # A delete of something the platform never saw, or saw deleted, tells it nothing.
        return "appointment.deleted" if previous is not None and not previous.deleted else None
    if previous is None or previous.deleted:
        return "appointment.created"
    if current.status != previous.status and current.status in _EVENT_FOR_STATUS:
        # Wins over a moved start: a cancelled visit's new time is not a time to remind anyone of.
        return _EVENT_FOR_STATUS[current.status]
    if (
        previous.start is not None
        and current.start is not None
        and previous.start != current.start
        and current.status not in _SETTLED
    ):
        return "appointment.rescheduled"
    if _visible(previous) != _visible(current):
        return "appointment.updated"
    return None


def index_fields(appointment: Appointment) -> IndexFields:
    """Return the fields the platform API filters and sorts appointments by (sorted by start)."""
    start = instant(appointment.start, None)
    return {
        "patient": appointment.patient.reference if appointment.patient else None,
        "sort": start.timestamp() if start else None,
        "status": appointment.status,
    }


def _visible(appointment: Appointment) -> dict[str, Any]:
    return appointment.model_dump(exclude={"source": set(_VERSION_FIELDS)})


def _kind(value: object) -> ParticipantKind:
    if not isinstance(value, Mapping):
        return "other"
    reference = text(value.get("reference"))
    match = _REFERENCE.search(reference) if reference else None
    if match is not None:
        return _KIND.get(match.group(1), "other")
    # urn:uuid: and identifier-only references may still say their type, as a name or a profile URL.
    declared = text(value.get("type"))
    return _KIND.get(declared.rsplit("/", 1)[-1], "other") if declared else "other"


def _participant(value: object) -> Participant:
    if not isinstance(value, Mapping):
        return Participant()
    actor = value.get("actor")
    who = ref(actor)
    return Participant(
        actor=who,
        kind=_kind(actor) if who is not None else "other",
        required=text(value.get("required")),
        status=text(value.get("status")),
        roles=concepts(value.get("type")),
    )


def _reasons(resource: Mapping[str, Any]) -> list[CodeableText]:
    reasons = concepts(resource.get("reasonCode"))
    # A reminder shows a reason's words; a referenced Condition is never resolved, so show its display.
    for reason in refs(resource.get("reasonReference")):
        if reason.display is not None:
            reasons.append(CodeableText(text=reason.display))
    return reasons


def _minutes(value: object, start: datetime | None, end: datetime | None) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0 and float(value).is_integer():
        return int(value)
    # Platform UIs show a length; R4 leaves minutesDuration optional when start and end say it.
    if start is not None and end is not None and end > start:
        return int((end - start).total_seconds() // 60)
    return None


FAMILIES: Final = [
    Family(
        fhir_type=FHIR_TYPE,
        record_type="appointment",
        route="appointments",
        model=Appointment,
        to_platform=to_platform,
        classify=classify,
        deleted_record=deleted_record,
        index_fields=index_fields,
    )
]
