"""Platform write-back requests built into the FHIR R4 resources the tenant's EHR will store, as typed models.

Each builder is pure: it takes the validated request, the write-back's id, the mapping context (tenant, vendor,
zone, now) and whatever the route read from the store (a thread, a stored resource, a Questionnaire), and returns
the resource with how the EHR is to store it. Every resource is built the same way (``_built``):

1. The record's mapper writes it as R4 JSON (``to_fhir``, the one FHIR writer, whose round trip the mapper tests
   check), or the route read the stored resource an update changes.
2. It is constructed as its fhir.resources R4B model (``conformance.fhir_models``), and the builder's own changes
   are made on that typed object: no id on a create, a request's period, a cancellation, an activity's status.
3. The tenant's vendor profile adjusts the typed object (``mappers.vendors.outbound``).
4. The model's own JSON export is what is queued and sent, once both checks take it (``refusals``): the R4B model
   again, then the project's R4 validator. A survey response is also checked against its Questionnaire when the
   gateway holds it, before the vendor's adjustment (Epic's decimals are its form of the same integer answers).

A resource either check refuses is never queued: the request is answered 422 with an OperationOutcome naming each
element at fault, a builder's defect included (the platform learns it at once, and nothing waits in the queue for
a delivery that cannot succeed). Delivery checks once more before anything reaches the EHR (``refusal``): a
resource queued some other way (by an older release, say) fails its write-back with that OperationOutcome.

R4 and R4B: the R4B models of Communication, QuestionnaireResponse, Appointment and CarePlan are R4's element for
element, except ``Extension.value[x]`` (``conformance.fhir_models`` says how it was compared). R4 is kept: an
extension with R4's ``valueMeta``, which R4B lacks, is refused by the model with an issue saying so (a stored
resource that carries one cannot be written back), and R4B's ``valueCodeableReference`` and ``valueRatioRange``
are refused by the R4 validator. The export writes instants its own way: a UTC offset as ``Z``, fractional
seconds with six digits (the same instant; R4 allows either form, and digits past the microsecond are dropped).

A platform-created record has no FHIR source yet: its ``source`` block names the resource it becomes, with the
write-back id as ``fhir_id`` and version ``"0"`` (``MapContext(version_id="0")``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from conformance import fhir_models
from conformance.outcome import Issue, operation_outcome
from conformance.validator import Support, validate_resource
from gateway.errors import Unprocessable
from gateway.store import ehr_meta
from gateway.writebacks.models import AppointmentRequest, MessageRequest, SurveyResponseRequest
from mappers import appointment as appointment_mapper
from mappers import message as message_mapper
from mappers import survey_response as survey_mapper
from mappers import treatment_plan as plan_mapper
from mappers.appointment import Appointment
from mappers.context import MapContext
from mappers.message import Message, MessageThread
from mappers.model import CodeableText, Coding, Identifier, Ref
from mappers.participant import Participant
from mappers.survey_response import SurveyResponse
from mappers.vendors import outbound, profile

M = TypeVar("M", bound="fhir_models.DomainResource")

# The business identifier of a platform-requested appointment: what the connector's If-None-Exist matches.
APPOINTMENT_SYSTEM: Final = "urn:fhir-gateway:platform-appointment"
COMMUNICATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/communication-category"
_UNCANCELLABLE: Final = frozenset({"cancelled", "fulfilled", "noshow", "entered-in-error"})


@dataclass(frozen=True)
class Target:
    """What a builder made: the resource and how the EHR is to store it."""

    method: Literal["create", "update"]
    resource: dict[str, Any]
    resource_id: str = ""
    if_match: str = ""
    if_none_exist: str = ""
    sensitive: bool = False  # made from a labelled record: it exists only for clients with the sensitive scope


def message(body: MessageRequest, wid: str, ctx: MapContext, thread: MessageThread | None) -> Target:
    """Build a Communication (conditional create on ``urn:fhir-gateway:platform-message|<id>``); a reply names
    its thread's first message as ``partOf`` and its last as ``inResponseTo`` and carries the thread's labels."""
    if body.sender.startswith("Patient/") and body.sender != body.patient:
        raise Unprocessable("a patient sends messages about themself: sender must be the patient", expression="sender")
    record = Message(
        id=wid, thread_id=thread.id if thread else wid, status="completed", fhir_status="completed",
        category=[_category(body.category)] if body.category else [], priority=body.priority,
        patient=Ref(reference=body.patient), sender=Ref(reference=body.sender),
        recipients=[Ref(reference=r) for r in body.recipients], sent_at=ctx.last_updated, body=body.body,
        **_reply(thread), source=ctx.source("Communication", wid),
    )  # fmt: skip
    resource = _built(message_mapper.to_fhir(record, ctx), fhir_models.Communication, ctx)
    return Target("create", resource, if_none_exist=_search(resource, message_mapper.WRITEBACK_SYSTEM))


def survey_response(body: SurveyResponseRequest, wid: str, ctx: MapContext, support: Support | None) -> Target:
    """Build a QuestionnaireResponse (conditional create on its identifier), checked against the survey's
    Questionnaire when the gateway holds it (``support``)."""
    patient = Ref(reference=body.patient)
    record = SurveyResponse(
        id=wid, survey=body.survey, status=body.status, subject=patient, patient=patient,
        encounter=_ref(body.encounter), author=_ref(body.author), answered_by=_ref(body.answered_by),
        based_on=[Ref(reference=r) for r in body.based_on],
        authored_at=utc(body.authored_at) if body.authored_at else ctx.last_updated,
        answers=[a.answer() for a in body.answers], source=ctx.source("QuestionnaireResponse", wid),
    )  # fmt: skip
    written = survey_mapper.to_fhir(record, ctx)
    resource = _built(written, fhir_models.QuestionnaireResponse, ctx, _without_id, support=support)
    return Target("create", resource, if_none_exist=survey_mapper.if_none_exist(resource) or "")


def appointment(body: AppointmentRequest, wid: str, ctx: MapContext) -> Target:
    """Build an Appointment, ``proposed`` (a request) or ``booked`` (conditional create on
    ``urn:fhir-gateway:platform-appointment|<id>``)."""
    _check_times(body)
    participants = [
        Participant(actor=Ref(reference=body.patient), kind="patient"),
        *(Participant(actor=Ref(reference=p), kind=_clinician_kind(p)) for p in body.practitioners),
        *([Participant(actor=Ref(reference=body.location), kind="location")] if body.location else []),
    ]
    record = Appointment(
        id=wid, status=body.status, fhir_status=appointment_mapper.FHIR_STATUS[body.status],
        start=utc(body.start), end=utc(body.end), timezone=ctx.timezone, minutes_duration=body.minutes_duration,
        patient=Ref(reference=body.patient), practitioners=[Ref(reference=p) for p in body.practitioners],
        participants=participants, service_type=body.service_type, appointment_type=body.appointment_type,
        reason=body.reason, description=body.description, comment=body.comment,
        patient_instruction=body.patient_instruction, slot=[Ref(reference=s) for s in body.slot],
        modality=body.modality,
        source=ctx.source("Appointment", wid, [Identifier(system=APPOINTMENT_SYSTEM, value=wid)]),
    )  # fmt: skip
    period = body.requested_period

    def request(typed: fhir_models.Appointment) -> None:
        _without_id(typed)
        if period is not None and (period.start or period.end):
            # The record has no element for it (it describes visits, not requests); R4 carries it here.
            typed.requestedPeriod = [fhir_models.Period(start=utc(period.start), end=utc(period.end))]

    resource = _built(appointment_mapper.to_fhir(record, ctx), fhir_models.Appointment, ctx, request)
    return Target("create", resource, if_none_exist=_search(resource, APPOINTMENT_SYSTEM))


def cancellation(stored: Mapping[str, Any], appointment_id: str, reason: str | None, ctx: MapContext) -> Target:
    """Build the stored Appointment with status ``cancelled`` (and the reason), an update with ``If-Match``."""
    resource, version = ehr_meta.for_ehr(stored)
    status = str(resource.get("status") or "")
    if status in _UNCANCELLABLE:
        raise Unprocessable(f"Appointment/{appointment_id} is {status} and cannot be cancelled", expression="status")

    def cancel(typed: fhir_models.Appointment) -> None:
        appointment_mapper.cancel(typed, reason)

    cancelled = _built(appointment_mapper.r4_names(resource), fhir_models.Appointment, ctx, cancel)
    return Target("update", cancelled, resource_id=appointment_id, if_match=version)


def activity_status(stored: Mapping[str, Any], plan_id: str, index: int, status: str, ctx: MapContext) -> Target:
    """Build the stored CarePlan with activity ``index``'s status changed, an update with ``If-Match``."""
    resource, version = ehr_meta.for_ehr(stored)

    def change(typed: fhir_models.CarePlan) -> None:
        try:
            plan_mapper.set_activity_status(typed, index, status)
        except ValueError as exc:
            raise Unprocessable(str(exc), expression="index") from None

    changed = _built(resource, fhir_models.CarePlan, ctx, change)
    return Target("update", changed, resource_id=plan_id, if_match=version)


def refusals(resource: Mapping[str, Any], support: Support | None = None) -> list[Issue]:
    """Return what either check refuses in a resource to send: fhir.resources' R4B model, then the R4 validator
    (with the Questionnaires of ``support``); [] when both take it."""
    found = fhir_models.refusals(resource)
    found += [i for i in validate_resource(resource, support=support) if i.severity in ("error", "fatal")]
    return found


def checked(resource: dict[str, Any], support: Support | None = None) -> dict[str, Any]:
    """Return the resource if both checks take it, else raise 422 naming each element at fault."""
    issues = refusals(resource, support)
    if issues:
        raise Unprocessable(f"the {resource.get('resourceType')} built for the EHR is not valid", issues=issues)
    return resource


def refusal(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the OperationOutcome that keeps a queued resource from the EHR (either check refuses it), else None:
    delivery's last check before anything is sent."""
    issues = refusals(resource)
    return operation_outcome(issues) if issues else None


def utc(moment: datetime | None) -> str | None:
    """Return an aware datetime as FHIR's UTC form with Z (milliseconds only when it has them)."""
    if moment is None:
        return None
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _built(
    resource: Mapping[str, Any],
    model: type[M],
    ctx: MapContext,
    *changes: Callable[[M], None],
    support: Support | None = None,
) -> dict[str, Any]:
    """Construct the resource as its R4B model, make ``changes`` and the vendor's adjustments on the typed object,
    and return its JSON export once both checks take it (else raise 422 naming each element at fault)."""
    vendor = profile(ctx.vendor)

    def adjust(typed: M) -> None:
        outbound.adjust(typed, vendor)

    try:
        if support is None:
            exported = fhir_models.written(resource, model, *changes, adjust)
        else:
            # What was answered is checked against the Questionnaire before the vendor's adjustment: Epic's
            # decimals for integer items are that vendor's form of the same answers, not other answers.
            plain = checked(fhir_models.written(resource, model, *changes), support)
            exported = fhir_models.written(plain, model, adjust)
    except fhir_models.Refused as exc:
        raise Unprocessable(f"the {model.__name__} built for the EHR is not valid", issues=exc.issues) from None
    return checked(exported)


def _without_id(typed: fhir_models.DomainResource) -> None:
    typed.id = None  # the EHR assigns the id of what it creates


def _search(resource: Mapping[str, Any], system: str) -> str:
    """Return the If-None-Exist search on the resource's identifier of ``system``."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, Mapping) and identifier.get("system") == system and identifier.get("value"):
            return f"identifier={system}|{identifier['value']}"
    return ""


def _reply(thread: MessageThread | None) -> dict[str, Any]:
    """Return the Message fields that place a reply in ``thread``, as the inbound threading rule reads them."""
    if thread is None:
        return {}
    last = thread.message_ids[-1]
    reply: dict[str, Any] = {"topic": thread.topic, "security": list(thread.security)}
    if thread.id.startswith("topic-"):
        # A topic thread has no first message to point at: the reply names the thread's topic and its parent only
        # in words, which is what threads it by topic when the EHR sends it back.
        reply["in_response_to"] = [Ref(reference=None, display=f"reply to Communication/{last}")]
    else:
        reply["part_of"] = [Ref(reference=f"Communication/{thread.id}")]
        reply["in_response_to"] = [Ref(reference=f"Communication/{last}")]
    return reply


def _check_times(body: AppointmentRequest) -> None:
    if (body.start is None) != (body.end is None):
        raise Unprocessable(
            "start and end go together: give both or neither", expression="end" if body.start else "start"
        )
    if body.start is not None and body.end is not None and body.end <= body.start:
        raise Unprocessable("end must be after start", expression="end")
    if body.status == "scheduled" and body.start is None:
        raise Unprocessable("a booking (status scheduled) needs start and end", expression="start")
    period = body.requested_period
    if period is not None and period.start and period.end and period.end <= period.start:
        raise Unprocessable("requested_period.end must be after its start", expression="requested_period.end")


def _category(code: str) -> CodeableText:
    if code in ("alert", "notification", "reminder", "instruction"):
        return CodeableText(codings=[Coding(system=COMMUNICATION_CATEGORY, code=code)])
    return CodeableText(text=code)


def _clinician_kind(reference: str) -> Literal["practitioner", "practitioner_role"]:
    return "practitioner_role" if reference.startswith("PractitionerRole/") else "practitioner"


def _ref(reference: str | None) -> Ref | None:
    return Ref(reference=reference) if reference else None
