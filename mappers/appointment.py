"""FHIR R4 Appointment to the platform's Appointment record, and the change a new version makes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mappers.context import MapContext
from mappers.errors import MissingId, TenantMismatch, WrongResourceType
from mappers.model import (
    Appointment,
    AppointmentStatus,
    CodeableText,
    Coding,
    Identifier,
    Participant,
    ParticipantKind,
    Ref,
    SecurityLabel,
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
# Looser than the FHIR instant: EHRs send missing seconds, long fractions and offsets without a colon.
_INSTANT: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", re.ASCII
)

_EVENT_FOR_STATUS: Final[Mapping[str, str]] = {
    "cancelled": "appointment.cancelled",
    "no_show": "appointment.no_show",
    "completed": "appointment.completed",
}
# A start that moves on an appointment in one of these states is a correction, not a new time to attend.
_SETTLED: Final = frozenset({"cancelled", "no_show", "completed", "void"})
# Source fields that change with every stored version even when nothing the platform shows has changed.
_VERSION_FIELDS: Final = frozenset(
    {"version_id", "last_updated", "fhir_url", "ehr_version_id", "ehr_last_updated"}
)


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
    start = _instant(resource.get("start"), ctx.timezone)
    end = _instant(resource.get("end"), ctx.timezone)
    participants = [_participant(p) for p in _items(resource.get("participant"))]
    return Appointment(
        id=fhir_id,
        status=STATUS.get(fhir_status.strip().lower(), "unknown"),
        fhir_status=fhir_status,
        start=_utc_text(start),
        end=_utc_text(end),
        timezone=ctx.timezone,
        minutes_duration=_minutes(resource.get("minutesDuration"), start, end),
        patient=next((p.actor for p in participants if p.kind == "patient"), None),
        practitioners=[
            p.actor
            for p in participants
            if p.actor is not None and p.kind in ("practitioner", "practitioner_role")
        ],
        participants=participants,
        service_type=_concepts(resource.get("serviceType")),
        appointment_type=_concept(resource.get("appointmentType")),
        service_category=_concepts(resource.get("serviceCategory")),
        specialty=_concepts(resource.get("specialty")),
        reason=_reasons(resource),
        description=_text(resource.get("description")),
        patient_instruction=_text(resource.get("patientInstruction")),
        comment=_text(resource.get("comment")),
        # R4 spells it with one "l"; R5 and some EHRs with two.
        cancellation_reason=_concept(resource.get("cancelationReason") or resource.get("cancellationReason")),
        based_on=_refs(resource.get("basedOn")),
        slot=_refs(resource.get("slot")),
        security=_security_labels(resource),
        source=ctx.source(FHIR_TYPE, fhir_id, _identifiers(resource.get("identifier"))),
    )


def deleted_record(previous: Appointment, ctx: MapContext) -> Appointment:
    """Return the previous record as a tombstone of the stored version that deleted it."""
    if previous.source.tenant != ctx.tenant:
        raise TenantMismatch(f"Appointment/{previous.id} belongs to another tenant")
    source = ctx.source(previous.source.fhir_type, previous.source.fhir_id, previous.source.identifiers)
    return previous.model_copy(update={"deleted": True, "source": source}, deep=True)


def classify(previous: Appointment | None, current: Appointment) -> str | None:
    """Name the change event from previous to current, or None when the platform would see no change."""
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


def index_fields(appointment: Appointment) -> dict[str, str | float | None]:
    """Return the fields the platform API filters and sorts appointments by."""
    start = _instant(appointment.start, None)
    return {
        "patient": appointment.patient.reference if appointment.patient else None,
        "start_epoch": start.timestamp() if start else None,
        "status": appointment.status,
    }


def _security_labels(resource: Mapping[str, Any]) -> list[SecurityLabel]:
    """Collect every `meta.security` label of a resource and its contained resources, once each."""
    labels: dict[tuple[str | None, str], SecurityLabel] = {}
    contained = [c for c in _items(resource.get("contained")) if isinstance(c, Mapping)]
    for each in (resource, *contained):
        meta = each.get("meta")
        if not isinstance(meta, Mapping):
            continue
        for coding in _items(meta.get("security")):
            if isinstance(coding, str):
                # A bare code where a Coding belongs is malformed, but it still asks for restriction.
                coding = {"code": coding}
            if not isinstance(coding, Mapping):
                continue
            system = _text(coding.get("system"))
            # A label without a code is still a sign the source meant to restrict: keep it, never drop it.
            code = _text(coding.get("code")) or ""
            labels.setdefault(
                (system, code), SecurityLabel(system=system, code=code, display=_text(coding.get("display")))
            )
    return list(labels.values())


def _visible(appointment: Appointment) -> dict[str, Any]:
    return appointment.model_dump(exclude={"source": set(_VERSION_FIELDS)})


def _items(value: object) -> Iterator[Any]:
    # A lone object where R4 wants an array is a common vendor slip; read it as a one-element array.
    if isinstance(value, list):
        yield from value
    elif isinstance(value, Mapping):
        yield value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _ref(value: object) -> Ref | None:
    if not isinstance(value, Mapping):
        return None
    reference, display = _text(value.get("reference")), _text(value.get("display"))
    if reference is None and display is None:
        return None
    return Ref(reference=reference, display=display)


def _refs(value: object) -> list[Ref]:
    return [ref for ref in map(_ref, _items(value)) if ref is not None]


def _kind(value: object) -> ParticipantKind:
    if not isinstance(value, Mapping):
        return "other"
    reference = _text(value.get("reference"))
    match = _REFERENCE.search(reference) if reference else None
    if match is not None:
        return _KIND.get(match.group(1), "other")
    # urn:uuid: and identifier-only references may still say their type, as a name or a profile URL.
    declared = _text(value.get("type"))
    return _KIND.get(declared.rsplit("/", 1)[-1], "other") if declared else "other"


def _participant(value: object) -> Participant:
    if not isinstance(value, Mapping):
        return Participant()
    actor = value.get("actor")
    ref = _ref(actor)
    return Participant(
        actor=ref,
        kind=_kind(actor) if ref is not None else "other",
        required=_text(value.get("required")),
        status=_text(value.get("status")),
        roles=_concepts(value.get("type")),
    )


def _concept(value: object) -> CodeableText | None:
    if not isinstance(value, Mapping):
        return None
    codings = [
        Coding(system=_text(c.get("system")), code=_text(c.get("code")), display=_text(c.get("display")))
        for c in _items(value.get("coding"))
        if isinstance(c, Mapping)
    ]
    codings = [c for c in codings if c.system or c.code or c.display]
    text = _text(value.get("text"))
    if text is None and not codings:
        return None
    return CodeableText(text=text, codings=codings)


def _concepts(value: object) -> list[CodeableText]:
    return [concept for concept in map(_concept, _items(value)) if concept is not None]


def _reasons(resource: Mapping[str, Any]) -> list[CodeableText]:
    reasons = _concepts(resource.get("reasonCode"))
    # A reminder shows a reason's words; a referenced Condition is never resolved, so show its display.
    for ref in _refs(resource.get("reasonReference")):
        if ref.display is not None:
            reasons.append(CodeableText(text=ref.display))
    return reasons


def _identifiers(value: object) -> list[Identifier]:
    identifiers = [
        Identifier(system=_text(i.get("system")), value=_text(i.get("value")), use=_text(i.get("use")))
        for i in _items(value)
        if isinstance(i, Mapping)
    ]
    return [i for i in identifiers if i.system or i.value]


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _instant(value: object, zone: str | None) -> datetime | None:
    """Read a FHIR instant as an aware UTC datetime, or None when it names no point in time."""
    if not isinstance(value, str):
        return None
    match = _INSTANT.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
    second = min(int(match.group(6) or 0), 59)  # a leap second (":60") is valid FHIR, not valid Python
    # Without an offset the time is local; only the clinic's zone can say when it happens, never a guess.
    try:
        tz = _offset(match.group(7)) if match.group(7) else _zone(zone)
        if tz is None:
            return None
        return datetime(year, month, day, hour, minute, second, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _utc_text(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z" if moment else None


def _minutes(value: object, start: datetime | None, end: datetime | None) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0 and float(value).is_integer():
        return int(value)
    # Platform UIs show a length; R4 leaves minutesDuration optional when start and end say it.
    if start is not None and end is not None and end > start:
        return int((end - start).total_seconds() // 60)
    return None
