"""The write-back API's request and answer models: what the platform sends, validated before anything is mapped."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mappers import treatment_plan as plan_mapper
from mappers.answer import Answer, Quantity, ValueType
from mappers.model import CodeableText, Coding, Ref

ID_PATTERN: Final = r"[A-Za-z0-9\-.]{1,64}"  # a FHIR id


# -- request models -----------------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _reference_to(*types: str) -> str:
    """Return the pattern of a relative reference to one of ``types``."""
    return rf"^({'|'.join(types)})/{ID_PATTERN}$"


def _has_utc_form(moment: datetime) -> datetime:
    """Refuse a moment whose UTC form is before year 1 or after 9999: FHIR has no instant for it."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment must fall between the years 1 and 9999 in UTC") from None
    return moment


# A moment with its UTC offset; the write-back sends it in UTC.
Moment = Annotated[AwareDatetime, AfterValidator(_has_utc_form)]
PatientRef = Annotated[str, Field(pattern=_reference_to("Patient"), description="Patient/<id>")]
ClinicianRef = Annotated[str, Field(pattern=_reference_to("Practitioner", "PractitionerRole"))]
SenderRef = Annotated[
    str, Field(pattern=_reference_to("Practitioner", "Patient"), description="Practitioner/<id> or Patient/<id>")
]
PersonRef = Annotated[str, Field(pattern=_reference_to("Patient", "Practitioner", "PractitionerRole", "RelatedPerson"))]
RecipientRef = Annotated[
    str,
    Field(
        pattern=_reference_to(
            "Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "CareTeam", "Organization"
        )
    ),
]
Words = Annotated[str, Field(min_length=1, max_length=4000)]
ThreadId = Annotated[str, Field(pattern=rf"^{ID_PATTERN}$", description="the message thread this replies in")]
Category = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="alert, notification, reminder or instruction (HL7 communication-category), or a local word",
    ),
]


class MessageRequest(_Request):
    """A secure message to write to the EHR: a new conversation, or a reply in a thread (``thread_id``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"patient": "Patient/pat-1", "sender": "Patient/pat-1", "body": "Can we move Thursday's session?",
                 "recipients": ["Practitioner/prac-1"], "thread_id": "comm-1", "priority": "routine"}
            ]
        }
    )  # fmt: skip

    patient: PatientRef
    sender: SenderRef
    body: Annotated[str, Field(min_length=1, max_length=100_000, description="the message, plain text")]
    recipients: list[RecipientRef] = Field(default_factory=list, max_length=50)
    thread_id: ThreadId | None = None
    category: Category | None = None
    priority: Literal["routine", "urgent", "asap", "stat"] | None = None


class AnswerRequest(_Request):
    """One answer: the item it answers (linkId, enclosing groups), and its typed value."""

    link_id: Annotated[str, Field(min_length=1, max_length=255)]
    path: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=40, description="linkIds of the groups enclosing the item, outermost first"
    )
    question: Words | None = None
    item_code: Coding | None = Field(default=None, description="the question's code, e.g. LOINC 44250-9 (PHQ-9 #1)")
    value_type: Literal[
        "boolean", "decimal", "integer", "date", "date_time", "time", "string", "uri", "coding", "quantity",
        "reference",
    ]  # fmt: skip
    value: Any = Field(
        description="as value_type says: true/false, a number, a string (dates as FHIR writes them), a Coding "
        "{system, code, display}, a Quantity {value, unit, system, code} or a Reference {reference, display}"
    )

    @field_validator("value")
    @classmethod
    def _typed(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("value_type")
        if kind is None:
            return value
        return _typed_value(kind, value)

    def answer(self) -> Answer:
        """Return the answer as the SurveyResponse record holds it."""
        value_type: ValueType = self.value_type
        return Answer(
            link_id=self.link_id, path=list(self.path), item_code=self.item_code, question=self.question,
            value_type=value_type, value=self.value,
        )  # fmt: skip


def _typed_value(kind: str, value: Any) -> Any:
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("a boolean answer must be true or false")
        return value
    if kind in ("integer", "decimal"):
        number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        if not number or (kind == "integer" and not _whole(value)):
            raise ValueError(
                "an integer answer must be a whole number" if kind == "integer" else "a decimal answer must be a number"
            )
        return int(value) if kind == "integer" else value
    if kind in ("date", "date_time", "time", "string", "uri"):
        if not isinstance(value, str) or not value.strip() or len(value) > 10_000:
            raise ValueError(f"a {kind} answer must be a non-empty string")
        return value.strip()
    shapes: dict[str, type[BaseModel]] = {"coding": Coding, "quantity": Quantity, "reference": Ref}
    try:
        return shapes[kind].model_validate(value)
    except ValidationError:
        fields = ", ".join(shapes[kind].model_fields)
        raise ValueError(f"a {kind} answer must be an object with {fields}") from None


def _whole(value: int | float) -> bool:
    return isinstance(value, int) or value.is_integer()


class SurveyResponseRequest(_Request):
    """A patient's answers to a survey, to write to the EHR as a QuestionnaireResponse."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"survey": "http://loinc.org/q/44249-1", "patient": "Patient/pat-1", "status": "completed",
                 "authored_at": "2026-12-01T10:00:00Z",
                 "answers": [{"link_id": "q1", "item_code": {"system": "http://loinc.org", "code": "44250-9"},
                              "value_type": "coding",
                              "value": {"system": "http://loinc.org", "code": "LA6569-3", "display": "Several days"}}]}
            ]
        }
    )  # fmt: skip

    survey: Annotated[str, Field(pattern=r"^\S{1,1024}$", description="the Questionnaire's canonical URL[|version]")]
    patient: PatientRef
    status: Literal["in_progress", "completed", "amended", "stopped"] = "completed"
    authored_at: Moment | None = Field(default=None, description="when answered; the time received if absent")
    author: PersonRef | None = None
    answered_by: PersonRef | None = Field(default=None, description="who answered (QuestionnaireResponse.source)")
    encounter: Annotated[str, Field(pattern=_reference_to("Encounter"))] | None = None
    based_on: list[Annotated[str, Field(pattern=_reference_to("CarePlan", "ServiceRequest"))]] = Field(
        default_factory=list, max_length=10
    )
    answers: list[AnswerRequest] = Field(min_length=1, max_length=1000)


class PeriodRequest(_Request):
    """A window of time (each bound with its UTC offset)."""

    start: Moment | None = None
    end: Moment | None = None


class AppointmentRequest(_Request):
    """A visit to write to the EHR: a request the clinic confirms (``requested``), or a booking (``scheduled``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "scheduled", "patient": "Patient/pat-1", "practitioners": ["Practitioner/prac-1"],
                 "start": "2026-12-10T09:00:00-05:00", "end": "2026-12-10T09:50:00-05:00",
                 "service_type": [{"text": "Psychotherapy"}], "reason": [{"text": "Follow-up"}], "modality": "video"},
                {"status": "requested", "patient": "Patient/pat-1",
                 "requested_period": {"start": "2026-12-14T08:00:00-05:00", "end": "2026-12-18T18:00:00-05:00"},
                 "comment": "Mornings preferred"},
            ]
        }
    )  # fmt: skip

    status: Literal["requested", "scheduled"] = Field(
        default="requested", description="requested: FHIR proposed, awaiting the clinic; scheduled: FHIR booked"
    )
    patient: PatientRef
    practitioners: list[ClinicianRef] = Field(default_factory=list, max_length=20)
    location: Annotated[str, Field(pattern=_reference_to("Location"))] | None = None
    start: Moment | None = None
    end: Moment | None = None
    minutes_duration: Annotated[int, Field(ge=1, le=1440)] | None = None
    requested_period: PeriodRequest | None = Field(default=None, description="when the patient could come")
    service_type: list[CodeableText] = Field(default_factory=list, max_length=10)
    appointment_type: CodeableText | None = None
    reason: list[CodeableText] = Field(default_factory=list, max_length=10)
    description: Words | None = None
    comment: Words | None = None
    patient_instruction: Words | None = None
    slot: list[Annotated[str, Field(pattern=_reference_to("Slot"))]] = Field(default_factory=list, max_length=10)
    modality: Literal["in_person", "video", "phone"] | None = None


class CancelRequest(_Request):
    """Why the visit is cancelled (optional)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "Patient is unwell"}]})

    reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


class ActivityStatusRequest(_Request):
    """An activity's new status: an R4 CarePlan activity status code or its platform spelling."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "completed"}]})

    status: str = Field(
        description=f"one of {', '.join(plan_mapper.ACTIVITY_STATUS)}, or its platform spelling (in_progress)"
    )

    @field_validator("status")
    @classmethod
    def _known(cls, value: str) -> str:
        code = value if value in plan_mapper.ACTIVITY_STATUS else _ACTIVITY_CODE.get(value)
        if code is None:
            raise ValueError(f"the status must be one of {', '.join(plan_mapper.ACTIVITY_STATUS)}")
        return code


_ACTIVITY_CODE: Final[Mapping[str, str]] = {word: code for code, word in plan_mapper.ACTIVITY_STATUS.items()}


class WritebackAccepted(BaseModel):
    """A write-back accepted: queued for the EHR (or, for a repeated Idempotency-Key, as it now stands)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": "6f0e3c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b", "status": "queued", "kind": "message",
                 "links": {"self": "/platform/v1/writebacks/6f0e3c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b"}}
            ]
        }
    )  # fmt: skip

    id: str
    status: str
    kind: str
    links: dict[str, str]


class WritebackView(BaseModel):
    """A write-back and where its delivery stands."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"id": "6f0e3c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b", "kind": "appointment_cancel", "status": "delivered",
                 "method": "update", "resource_type": "Appointment", "resource_id": "appt-1",
                 "created_at": "2026-12-01T10:00:00.000Z", "updated_at": "2026-12-01T10:00:02.000Z", "attempts": 1,
                 "ehr_id": "appt-1", "ehr_version": "8", "outcome": None, "error": None,
                 "links": {"self": "/platform/v1/writebacks/6f0e3c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b"}}
            ]
        }
    )  # fmt: skip

    id: str
    kind: str
    status: str = Field(description="queued, delivering, delivered, failed or dead_lettered")
    method: str = Field(description="create (conditional, If-None-Exist) or update (If-Match)")
    resource_type: str
    resource_id: str | None = Field(description="the EHR's id of the resource an update changes")
    created_at: str
    updated_at: str
    attempts: int
    ehr_id: str | None = Field(description="the resource's id in the EHR, once delivered")
    ehr_version: str | None = Field(description="its version in the EHR, once delivered")
    outcome: dict[str, Any] | None = Field(
        description="the OperationOutcome of a failed write-back: the EHR's when it refused the write, or the "
        "gateway's own when its checks refused the resource before anything was sent"
    )
    error: str | None
    links: dict[str, str]


# -- routes -------------------------------------------------------------------------------------------------
