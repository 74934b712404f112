"""FHIR R4 Appointment to the platform's Appointment record and back, and the change a new version makes.

Vendor quirks come from ``profile(ctx.vendor)``: Oracle Health's is-cancelable / is-reschedulable extensions and
contained video rooms, athenahealth's practice and department. Two R5 elements that R4 lacks are read and written
as HL7's cross-version extensions: ``Appointment.replaces`` (``rescheduled_from``; R4's ``basedOn`` only points
at a ServiceRequest) and ``Appointment.virtualService`` (``modality`` and ``video_link``, see
``mappers.modality``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field

from conformance import fhir_models
from mappers import writer
from mappers.context import MapContext
from mappers.elements import (
    MAPPING,
    concept,
    concepts,
    identifier_fields,
    instant,
    instant_and_text,
    items,
    ref,
    refs,
    security_labels,
    text,
)
from mappers.errors import WrongResourceType
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.modality import (
    VIRTUAL_SERVICE,
    contained_links,
    from_concepts,
    strongest,
    virtual_service,
    virtual_service_extension,
)
from mappers.model import CodeableText, Record, Ref
from mappers.participant import Participant, kind_of, participant_fields, participant_json
from mappers.vendors import VendorProfile, profile
from mappers.writer import put

FHIR_TYPE: Final = "Appointment"


AppointmentStatus = Literal[
    "requested",
    "waitlisted",
    "scheduled",
    "checked_in",
    "completed",
    "no_show",
    "cancelled",
    "void",
    "unknown",
]


class Appointment(Record):
    """A visit as a reminder, check-in or scheduling service sees it, times in UTC plus the clinic's zone."""

    record_type: Literal["appointment"] = "appointment"
    status: AppointmentStatus
    fhir_status: str
    start: str | None = None
    end: str | None = None
    timezone: str | None = None
    minutes_duration: int | None = None
    patient: Ref | None = None
    practitioners: list[Ref] = Field(default_factory=list)
    participants: list[Participant] = Field(default_factory=list)
    service_type: list[CodeableText] = Field(default_factory=list)
    appointment_type: CodeableText | None = None
    service_category: list[CodeableText] = Field(default_factory=list)
    specialty: list[CodeableText] = Field(default_factory=list)
    reason: list[CodeableText] = Field(default_factory=list)
    description: str | None = None
    patient_instruction: str | None = None
    comment: str | None = None
    cancellation_reason: CodeableText | None = None
    based_on: list[Ref] = Field(default_factory=list)
    slot: list[Ref] = Field(default_factory=list)
    # How the visit happens, from its codes and any telehealth link (None when nothing says).
    modality: Literal["in_person", "video", "phone"] | None = None
    # The patient's own link to join a video visit, where the EHR gives one (never the clinician's).
    video_link: str | None = None
    # Whether the EHR lets the patient cancel or reschedule it; None when the EHR does not say.
    can_cancel: bool | None = None
    can_reschedule: bool | None = None
    # The appointment this one replaces, when the EHR links it (an EHR that moves the visit in place does not).
    rescheduled_from: Ref | None = None
    # The practice (tenant) and department the EHR files it under, where the EHR names them (athenahealth).
    practice: Ref | None = None
    department: Ref | None = None
    # Element paths of the FHIR resource that the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


REPLACES: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.replaces"

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
# The R4 code a platform status is written as, when the record's own fhir_status does not say it.
FHIR_STATUS: Final[Mapping[AppointmentStatus, str]] = {
    "requested": "proposed",
    "waitlisted": "waitlist",
    "scheduled": "booked",
    "checked_in": "checked-in",
    "completed": "fulfilled",
    "no_show": "noshow",
    "cancelled": "cancelled",
    "void": "entered-in-error",
}

_EVENT_FOR_STATUS: Final[Mapping[str, str]] = {
    "cancelled": "appointment.cancelled",
    "no_show": "appointment.no_show",
    "completed": "appointment.completed",
}
# A start that moves on an appointment in one of these states is a correction, not a new time to attend.
_SETTLED: Final = frozenset({"cancelled", "no_show", "completed", "void"})

# Top-level elements the record carries, or renders (``text``); ``extension``, ``contained`` and ``participant`` are
# judged in detail.
_MAPPED: Final = frozenset(
    {
        "resourceType", "id", "meta", "text", "identifier", "status", "cancelationReason", "cancellationReason",
        "serviceCategory", "serviceType", "specialty", "appointmentType", "reasonCode", "reasonReference",
        "description", "start", "end", "minutesDuration", "slot", "comment", "patientInstruction", "basedOn",
        "virtualService", "replaces",
    }
)  # fmt: skip
_PARTICIPANT_MAPPED: Final = frozenset({"actor", "required", "status", "type"})


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Appointment:
    """Map a FHIR R4 Appointment, parsed from JSON, to the platform's Appointment record."""
    fhir_id = resource_id(resource, FHIR_TYPE)

    vendor = profile(ctx.vendor)
    fhir_status = resource.get("status")
    fhir_status = fhir_status if isinstance(fhir_status, str) else ""
    start, start_text = instant_and_text(resource.get("start"), ctx.timezone)
    end, end_text = instant_and_text(resource.get("end"), ctx.timezone)
    # Each participant as its fields, and the record's source too: the Appointment's one validation builds them.
    participants = [participant_fields(p) for p in items(resource.get("participant"))]
    service_type = concepts(resource.get("serviceType"))
    appointment_type = concept(resource.get("appointmentType"))
    service_category = concepts(resource.get("serviceCategory"))
    links, rooms = contained_links(resource, vendor)
    service_modality, service_link = virtual_service(resource)
    video_link = links.get("patient") or service_link
    read = set(_READ_ALWAYS)
    can_cancel = _flag(resource, vendor.appointment_cancelable_extension, read)
    can_reschedule = _flag(resource, vendor.appointment_reschedulable_extension, read)
    practice = _extension_ref(resource, vendor.practice_extension, read)
    department = _department(resource, participants, vendor, read)
    # A dict, not keywords: validating one costs the model a third less (no keyword arguments to gather).
    return Appointment.model_validate(
        {
            "id": fhir_id,
            "status": STATUS.get(fhir_status.strip().lower(), "unknown"),
            "fhir_status": fhir_status,
            "start": start_text,
            "end": end_text,
            "timezone": ctx.timezone,
            "minutes_duration": _minutes(resource.get("minutesDuration"), start, end),
            "patient": next((p["actor"] for p in participants if p.get("kind") == "patient"), None),
            "practitioners": [
                p["actor"]
                for p in participants
                if p.get("actor") is not None and p["kind"] in ("practitioner", "practitioner_role")
            ],
            "participants": participants,
            "service_type": service_type,
            "appointment_type": appointment_type,
            "service_category": service_category,
            "specialty": concepts(resource.get("specialty")),
            "reason": _reasons(resource),
            "description": text(resource.get("description")),
            "patient_instruction": text(resource.get("patientInstruction")),
            "comment": text(resource.get("comment")),
            # R4 spells it with one "l"; R5 and some EHRs with two.
            "cancellation_reason": concept(resource.get("cancelationReason") or resource.get("cancellationReason")),
            "based_on": refs(resource.get("basedOn")),
            "slot": refs(resource.get("slot")),
            "modality": strongest(
                from_concepts([*service_type, *([appointment_type] if appointment_type else []), *service_category]),
                service_modality,
                "video" if rooms or video_link else None,
            ),
            "video_link": video_link,
            "can_cancel": can_cancel,
            "can_reschedule": can_reschedule,
            "rescheduled_from": _replaces(resource),
            "practice": practice,
            "department": department,
            "unmapped": _unmapped(resource, read, contained_read=rooms),
            "security": security_labels(resource),
            "source": ctx.source_fields(FHIR_TYPE, fhir_id, identifier_fields(resource.get("identifier"))),
        }
    )


def to_fhir(appointment: Appointment, ctx: MapContext) -> dict[str, Any]:
    """Build the R4 Appointment the platform writes back: a request (proposed) or a booking (booked)."""
    vendor = profile(ctx.vendor)
    resource: dict[str, Any] = {"resourceType": FHIR_TYPE, "id": appointment.id}
    put(resource, "meta", writer.meta(appointment.security))
    extensions = list(_extensions_of(appointment, vendor))
    if extensions:
        resource["extension"] = extensions
    put(resource, "identifier", writer.identifiers(appointment.source.identifiers))
    put(resource, "status", _fhir_status(appointment))
    put(resource, "cancelationReason", writer.concept(appointment.cancellation_reason))
    put(resource, "serviceCategory", writer.concepts(appointment.service_category))
    put(resource, "serviceType", writer.concepts(appointment.service_type))
    put(resource, "specialty", writer.concepts(appointment.specialty))
    put(resource, "appointmentType", writer.concept(appointment.appointment_type))
    put(resource, "reasonCode", writer.concepts(appointment.reason))
    put(resource, "description", appointment.description)
    put(resource, "start", appointment.start)
    put(resource, "end", appointment.end)
    put(resource, "minutesDuration", appointment.minutes_duration)
    put(resource, "slot", writer.references(appointment.slot))
    put(resource, "comment", appointment.comment)
    put(resource, "patientInstruction", appointment.patient_instruction)
    put(resource, "basedOn", writer.references(appointment.based_on))
    put(resource, "participant", _participants_of(appointment))
    return resource


def r4_names(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a stored Appointment with R5's spelling, which some EHRs send, under R4's name
    (``cancellationReason`` as ``cancelationReason``), so that it can be constructed and written back as R4."""
    if not isinstance(resource, MAPPING) or resource.get("resourceType") != FHIR_TYPE:
        raise WrongResourceType("only an Appointment can be cancelled")
    written = copy.deepcopy(dict(resource))
    r5_reason = written.pop("cancellationReason", None)
    if r5_reason is not None:
        written.setdefault("cancelationReason", r5_reason)
    return written


def cancel(appointment: fhir_models.Appointment, reason: str | None) -> None:
    """Cancel a stored Appointment (its R4B model, in place) with the platform's reason, for the EHR to store."""
    appointment.status = "cancelled"
    words = text(reason)
    if words is not None:
        appointment.cancelationReason = fhir_models.CodeableConcept(text=words.strip())
    if appointment.text is not None and appointment.text.status == "generated":
        # A generated narrative still says "booked"; the EHR generates a new one.
        appointment.text = None


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
    # A new video link, or a visit that became cancelable, is news; a narrative the EHR regenerated is not.
    if visibly_changed(previous, current):
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


# Extensions read for every vendor; a vendor's own are added as they are read, and the rest listed as unmapped.
_READ_ALWAYS: Final = frozenset({REPLACES, VIRTUAL_SERVICE})


def _extension(resource: Mapping[str, Any], url: str | None, read: set[str]) -> Mapping[str, Any] | None:
    if url is None:
        return None
    read.add(url)
    return next((e for e in items(resource.get("extension")) if isinstance(e, MAPPING) and e.get("url") == url), None)


def _flag(resource: Mapping[str, Any], url: str | None, read: set[str]) -> bool | None:
    found = _extension(resource, url, read)
    value = found.get("valueBoolean") if found is not None else None
    # "true" as a string is a vendor slip that still says nothing reliable: only a boolean counts.
    return value if isinstance(value, bool) else None


def _extension_ref(resource: Mapping[str, Any], url: str | None, read: set[str]) -> Ref | None:
    found = _extension(resource, url, read)
    return ref(found.get("valueReference")) if found is not None else None


def _replaces(resource: Mapping[str, Any]) -> Ref | None:
    found = _extension_ref(resource, REPLACES, set()) if "extension" in resource else None
    if found is not None or "replaces" not in resource:
        return found
    # An R5 server, or a lenient feed, may send the element itself.
    return next(iter(refs(resource.get("replaces"))), None)


def _department(
    resource: Mapping[str, Any], participants: list[dict[str, Any]], vendor: VendorProfile, read: set[str]
) -> Ref | dict[str, str | None] | None:
    named = _extension_ref(resource, vendor.department_extension, read)
    if named is not None or vendor.department_reference is None:
        return named
    pattern = re.compile(vendor.department_reference)
    # A participant's actor, as the fields its Ref is validated from (``participant_fields``).
    return next(
        (
            actor
            for actor in (p.get("actor") for p in participants)
            if actor and actor["reference"] and pattern.fullmatch(actor["reference"])
        ),
        None,
    )


def _unmapped(resource: Mapping[str, Any], read: set[str], *, contained_read: bool) -> list[str]:
    paths: set[str] = set()
    for key in resource:
        if key in _MAPPED:  # most of a resource's elements, told first
            continue
        if key in ("extension", "modifierExtension"):
            urls = {text(e.get("url")) or "" for e in items(resource[key]) if isinstance(e, MAPPING)}
            # A modifier extension changes what the resource means, so it is listed even when read.
            paths |= {f"{key}('{url}')" for url in urls if key == "modifierExtension" or url not in read}
        elif key == "contained":
            # Security labels of contained resources are always read; the rest only as vendor telehealth data.
            if not contained_read:
                paths.add(key)
        elif key == "participant":
            for p in items(resource[key]):
                # Most participants carry only what is mapped: told by one set comparison.
                if isinstance(p, MAPPING) and not _PARTICIPANT_MAPPED.issuperset(p):
                    paths.update(f"participant.{name}" for name in p if name not in _PARTICIPANT_MAPPED)
        else:
            paths.add(key)
    return sorted(paths)


def _fhir_status(appointment: Appointment) -> str | None:
    given = appointment.fhir_status.strip().lower()
    if STATUS.get(given) == appointment.status:
        return given
    # An unknown status keeps whatever code the EHR sent; there is no R4 code for "unknown".
    return FHIR_STATUS.get(appointment.status) or given or None


def _extensions_of(appointment: Appointment, vendor: VendorProfile) -> Iterator[dict[str, Any]]:
    # A link makes it a video visit whatever else the record says, as reading it back would.
    remote = "video" if appointment.video_link else appointment.modality
    if remote == "video" or remote == "phone":
        yield virtual_service_extension(remote, appointment.video_link)
    if appointment.rescheduled_from is not None:
        yield {"url": REPLACES, "valueReference": writer.reference(appointment.rescheduled_from)}
    # Whether the patient may cancel is the EHR's decision, never written back: can_cancel, can_reschedule.
    if vendor.practice_extension and appointment.practice is not None:
        yield {"url": vendor.practice_extension, "valueReference": writer.reference(appointment.practice)}
    if vendor.department_extension and appointment.department is not None:
        yield {"url": vendor.department_extension, "valueReference": writer.reference(appointment.department)}


def _participants_of(appointment: Appointment) -> list[dict[str, Any]]:
    participants = list(appointment.participants)
    named = [p.actor for p in participants if p.actor is not None]
    # A platform request may name only the patient and clinicians; R4 carries them as participants.
    if appointment.patient is not None and appointment.patient not in named:
        participants.append(Participant(actor=appointment.patient, kind="patient"))
    for who in appointment.practitioners:
        if who not in named:
            # A clinician's reference may say PractitionerRole; one that says nothing is a Practitioner.
            kind = kind_of(writer.reference(who))
            participants.append(Participant(actor=who, kind=kind if kind != "other" else "practitioner"))
    # R4 requires a participant's status: a request still awaits every answer, a booking has them.
    waiting = "needs-action" if appointment.status in ("requested", "waitlisted") else "accepted"
    return [participant_json(participant, waiting) for participant in participants]


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="appointment",
    route="appointments",
    model=Appointment,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _MAPPED | {"extension", "participant"},
)
