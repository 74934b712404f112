"""The normalized platform model: the records and change events the platform API serves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # A field the model does not know is a bug in a mapper or a client, not data to keep silently.
    model_config = ConfigDict(extra="forbid")


class SecurityLabel(_Strict):
    """A `meta.security` label (confidentiality, sensitivity, Part 2) carried to every derived record."""

    system: str | None
    code: str
    display: str | None = None


class Identifier(_Strict):
    """A business identifier of the source resource."""

    system: str | None
    value: str | None
    use: str | None = None


class Ref(_Strict):
    """A FHIR reference exactly as given (e.g. "Patient/123"); the gateway never resolves it."""

    reference: str | None
    display: str | None = None


class Coding(_Strict):
    """One code of a concept."""

    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableText(_Strict):
    """A compact CodeableConcept: its text and its codings."""

    text: str | None = None
    codings: list[Coding] = Field(default_factory=list)


class Source(_Strict):
    """Where a record came from: tenant, EHR, FHIR type, id and the stored version it was mapped from."""

    tenant: str
    vendor: str
    fhir_type: str
    fhir_id: str
    version_id: str
    last_updated: str
    ehr_version_id: str | None = None
    ehr_last_updated: str | None = None
    identifiers: list[Identifier] = Field(default_factory=list)
    fhir_url: str


ParticipantKind = Literal[
    "patient",
    "practitioner",
    "practitioner_role",
    "related_person",
    "location",
    "device",
    "healthcare_service",
    "other",
]


class Participant(_Strict):
    """One participant of an appointment, its kind taken from the reference's resource type."""

    actor: Ref | None = None
    kind: ParticipantKind = "other"
    required: str | None = None
    status: str | None = None
    roles: list[CodeableText] = Field(default_factory=list)


class Record(_Strict):
    """The part every normalized record shares: id, type, security labels, tombstone flag, source."""

    id: str
    record_type: str
    security: list[SecurityLabel] = Field(default_factory=list)
    deleted: bool = False
    source: Source


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


class ChangeEvent(_Strict):
    """One entry of a tenant's change feed: what happened to which record, with the record as it now is."""

    id: str
    type: str
    tenant: str
    occurred_at: str
    record_type: str
    record_id: str
    record: dict[str, Any]
