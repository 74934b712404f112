"""The write-back routes at ``/platform/v1``: what patients and clinicians do on the platform, sent to the EHR.

Each route validates its request, maps it to FHIR R4 with the tenant's vendor profile, validates that resource,
and queues it on the tenant's outbound stream for the connectors (``gateway.writebacks.store``), answering 202 with the
write-back's id. A tenant with no EHR connector (no ``ehr`` block in the clients file), or whose vendor's EHR does
not take that kind of write, is refused with 422 before anything is queued. Request and FHIR errors are 422
OperationOutcomes naming the field or element; an ``Idempotency-Key`` makes a retry return the first write-back.

A platform-created record has no FHIR source yet: its ``source`` block names the resource it becomes, with the
write-back id as ``fhir_id`` and version ``"0"`` (``MapContext(version_id="0")``); the EHR assigns the real id and
version, which ``GET /platform/v1/writebacks/{id}`` shows once delivered.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from conformance.outcome import Issue
from conformance.validator import Support, validate_resource
from gateway.auth import Principal
from gateway.errors import BadRequest, GatewayError, NotFound, Unprocessable
from gateway.services import Services, ServicesDep
from gateway.store.connection import text
from gateway.store.store import EXT_EHR_LAST_UPDATED, EXT_EHR_VERSION_ID, now_instant
from gateway.web.openapi import errors
from gateway.writebacks.models import (
    ID_PATTERN,
    ActivityStatusRequest,
    AppointmentRequest,
    CancelRequest,
    MessageRequest,
    SurveyResponseRequest,
    WritebackAccepted,
    WritebackView,
)
from gateway.writebacks.store import FAMILY, IDEMPOTENCY_KEY_PATTERN, Draft, Kind, Writeback, Writebacks, canonical
from mappers import appointment as appointment_mapper
from mappers import message as message_mapper
from mappers import survey_response as survey_mapper
from mappers import treatment_plan as plan_mapper
from mappers.appointment import Appointment
from mappers.context import MapContext
from mappers.errors import MappingError
from mappers.message import Message, MessageThread
from mappers.model import CodeableText, Coding, Identifier, Ref
from mappers.participant import Participant
from mappers.survey_response import SurveyResponse
from mappers.vendors import profile

PREFIX: Final = "/platform/v1"
# The business identifier of a platform-requested appointment: what the connector's If-None-Exist matches.
APPOINTMENT_SYSTEM: Final = "urn:fhir-gateway:platform-appointment"
COMMUNICATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/communication-category"
FHIR_TYPE: Final[Mapping[str, str]] = {
    "message": "Communication", "survey_response": "QuestionnaireResponse", "appointment": "Appointment",
    "treatment_plan": "CarePlan",
}  # fmt: skip
_UNCANCELLABLE: Final = frozenset({"cancelled", "fulfilled", "noshow", "entered-in-error"})


class _Route(APIRoute):
    """A route whose request-validation errors are 422 OperationOutcomes naming each field (400 for bad JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise _refusal(exc) from None

        return checked


def _refusal(exc: RequestValidationError) -> GatewayError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("the request body is not valid JSON")
    issues = [
        Issue(
            "error",
            "required" if e.get("type") == "missing" else "invalid",
            _field_path(tuple(e.get("loc", ()))),
            str(e.get("msg", "invalid")),
        )
        for e in errors
    ]
    return Unprocessable("the request is not valid", issues=issues)


def _field_path(loc: tuple[Any, ...]) -> str | None:
    """Return ``answers[0].value`` for pydantic's ``("body", "answers", 0, "value")``."""
    if len(loc) == 2 and loc[0] == "header":
        return "-".join(word.capitalize() for word in str(loc[1]).split("-"))  # as HTTP spells it: Idempotency-Key
    path = ""
    for i, part in enumerate(loc):
        if i == 0 and part in ("body", "path", "query", "header"):
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


router = APIRouter(
    prefix=PREFIX,
    tags=["Write-backs"],
    route_class=_Route,
    responses=errors(
        400,
        401,
        403,
        422,
        503,
        why={
            400: "the request body is not JSON",
            403: "not a platform client",
            422: "the request, or the FHIR built from it, is not valid; or the tenant's EHR cannot take it (no EHR "
            "connector, or a kind its vendor does not accept); or the Idempotency-Key was used for another request",
            503: "the tenant's outbound queue is full; retry after Retry-After seconds",
        },
    ),
)


def _principal(request: Request, services: ServicesDep) -> Principal:
    return services.auth.require(request.headers.get("authorization"), "platform")


def _writebacks(request: Request, services: ServicesDep) -> Writebacks:
    # One store per app (it remembers which tenants' consumer groups exist), built on first use.
    store = getattr(request.app.state, "writebacks", None)
    if not isinstance(store, Writebacks) or store.redis is not services.redis:
        settings = services.settings
        store = Writebacks(
            services.redis,
            services.keys,
            idempotency_seconds=int(settings.writeback_idempotency_days * 86_400),
            max_backlog=settings.max_backlog,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.wait_timeout_ms,
        )
        request.app.state.writebacks = store
    return store


PrincipalDep = Annotated[Principal, Depends(_principal)]
WritebacksDep = Annotated[Writebacks, Depends(_writebacks)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="a key of the client's choosing (1 to 255 visible ASCII characters): the same key with the same "
        "request returns the first write-back and queues nothing new; with a different request it is 422",
        openapi_examples={"a uuid": {"value": "9b2c6f1e-0d4a-4f3b-8c7e-5a1d2e3f4b6c"}},
    ),
]


@dataclass(frozen=True)
class _Target:
    """What a route built: the resource and how the EHR is to store it."""

    method: Literal["create", "update"]
    resource: dict[str, Any]
    resource_id: str = ""
    if_match: str = ""
    if_none_exist: str = ""


Build = Callable[[str, MapContext], Awaitable[_Target]]


@router.post("/messages", status_code=202, response_model=WritebackAccepted, summary="Send a message to the EHR")
async def post_message(
    body: MessageRequest,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue a Communication (conditional create on ``urn:fhir-gateway:platform-message|<id>``).

    With ``thread_id`` it is a reply in that thread: it names the thread's first message as ``partOf`` and its
    last as ``inResponseTo`` (a topic thread: its topic), and carries the thread's security labels.
    """

    async def build(wid: str, ctx: MapContext) -> _Target:
        if body.sender.startswith("Patient/") and body.sender != body.patient:
            raise Unprocessable(
                "a patient sends messages about themself: sender must be the patient", expression="sender"
            )
        thread = await _thread(services, principal.tenant, body) if body.thread_id else None
        record = Message(
            id=wid, thread_id=thread.id if thread else wid, status="completed", fhir_status="completed",
            category=[_category(body.category)] if body.category else [], priority=body.priority,
            patient=Ref(reference=body.patient), sender=Ref(reference=body.sender),
            recipients=[Ref(reference=r) for r in body.recipients], sent_at=ctx.last_updated, body=body.body,
            **_reply(thread), source=ctx.source("Communication", wid),
        )  # fmt: skip
        resource = _checked(message_mapper.to_fhir(record, ctx))
        return _Target("create", resource, if_none_exist=_search(resource, message_mapper.WRITEBACK_SYSTEM))

    payload = body.model_dump(mode="json")
    return await _submit(store, services, principal, response, "message", payload, idempotency_key, build)


@router.post(
    "/survey-responses", status_code=202, response_model=WritebackAccepted, summary="Send a survey response to the EHR"
)
async def post_survey_response(
    body: SurveyResponseRequest,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue a QuestionnaireResponse (conditional create on its identifier), validated against the survey's
    Questionnaire when the gateway holds it."""

    async def build(wid: str, ctx: MapContext) -> _Target:
        patient = Ref(reference=body.patient)
        record = SurveyResponse(
            id=wid, survey=body.survey, status=body.status, subject=patient, patient=patient,
            encounter=_ref(body.encounter), author=_ref(body.author), answered_by=_ref(body.answered_by),
            based_on=[Ref(reference=r) for r in body.based_on],
            authored_at=_utc(body.authored_at) if body.authored_at else ctx.last_updated,
            answers=[a.answer() for a in body.answers], source=ctx.source("QuestionnaireResponse", wid),
        )  # fmt: skip
        resource = survey_mapper.to_fhir(record, ctx)
        resource.pop("id", None)  # the EHR assigns the id of what it creates
        _checked(resource, await _questionnaires(services, principal.tenant, body.survey))
        return _Target("create", resource, if_none_exist=survey_mapper.if_none_exist(resource) or "")

    payload = body.model_dump(mode="json")
    return await _submit(store, services, principal, response, "survey_response", payload, idempotency_key, build)


@router.post(
    "/appointments", status_code=202, response_model=WritebackAccepted, summary="Request or book an appointment"
)
async def post_appointment(
    body: AppointmentRequest,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue an Appointment, ``proposed`` (a request) or ``booked`` (conditional create on
    ``urn:fhir-gateway:platform-appointment|<id>``). A booking needs ``start`` and ``end``; a request may give
    them, or ``requested_period``."""

    async def build(wid: str, ctx: MapContext) -> _Target:
        _check_times(body)
        participants = [
            Participant(actor=Ref(reference=body.patient), kind="patient"),
            *(Participant(actor=Ref(reference=p), kind=_clinician_kind(p)) for p in body.practitioners),
            *([Participant(actor=Ref(reference=body.location), kind="location")] if body.location else []),
        ]
        record = Appointment(
            id=wid, status=body.status, fhir_status=appointment_mapper.FHIR_STATUS[body.status],
            start=_utc(body.start), end=_utc(body.end), timezone=ctx.timezone, minutes_duration=body.minutes_duration,
            patient=Ref(reference=body.patient), practitioners=[Ref(reference=p) for p in body.practitioners],
            participants=participants, service_type=body.service_type, appointment_type=body.appointment_type,
            reason=body.reason, description=body.description, comment=body.comment,
            patient_instruction=body.patient_instruction, slot=[Ref(reference=s) for s in body.slot],
            modality=body.modality,
            source=ctx.source("Appointment", wid, [Identifier(system=APPOINTMENT_SYSTEM, value=wid)]),
        )  # fmt: skip
        resource = appointment_mapper.to_fhir(record, ctx)
        resource.pop("id", None)  # the EHR assigns the id of what it creates
        period = body.requested_period
        if period is not None and (period.start or period.end):
            # The record has no element for it (it describes visits, not requests); R4 carries it here.
            resource["requestedPeriod"] = [
                {k: v for k, v in (("start", _utc(period.start)), ("end", _utc(period.end))) if v}
            ]
        _checked(resource)
        return _Target("create", resource, if_none_exist=_search(resource, APPOINTMENT_SYSTEM))

    payload = body.model_dump(mode="json")
    return await _submit(store, services, principal, response, "appointment", payload, idempotency_key, build)


@router.post(
    "/appointments/{appointment_id}/cancel",
    status_code=202,
    response_model=WritebackAccepted,
    summary="Cancel an appointment",
    responses=errors(404, why={404: "no such appointment"}),
)
async def cancel_appointment(
    appointment_id: Annotated[
        str,
        Path(
            pattern=rf"^{ID_PATTERN}$", description="the appointment's id", openapi_examples={"id": {"value": "appt-1"}}
        ),
    ],
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    store: WritebacksDep,
    body: Annotated[
        CancelRequest | None,
        Body(
            openapi_examples={"with a reason": {"value": {"reason": "Patient is unwell"}}, "no reason": {"value": {}}}
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue the stored Appointment with status ``cancelled`` (and the reason) as an update with ``If-Match`` on
    the EHR's version. 404 when the gateway holds no such appointment."""
    reason = body.reason if body else None

    async def build(wid: str, ctx: MapContext) -> _Target:
        stored, version = _for_ehr(await services.store.read(principal.tenant, "Appointment", appointment_id))
        status = text(stored.get("status") or "")
        if status in _UNCANCELLABLE:
            raise Unprocessable(
                f"Appointment/{appointment_id} is {status} and cannot be cancelled", expression="status"
            )
        resource = _checked(appointment_mapper.cancellation(stored, reason))
        return _Target("update", resource, resource_id=appointment_id, if_match=version)

    payload = {"id": appointment_id, "reason": reason}
    return await _submit(store, services, principal, response, "appointment_cancel", payload, idempotency_key, build)


@router.patch(
    "/treatment-plans/{plan_id}/activities/{index}",
    status_code=202,
    response_model=WritebackAccepted,
    summary="Set a treatment-plan activity's status",
    responses=errors(404, why={404: "no such treatment plan"}),
)
async def patch_activity(
    plan_id: Annotated[
        str,
        Path(
            pattern=rf"^{ID_PATTERN}$",
            description="the treatment plan's id",
            openapi_examples={"id": {"value": "plan-1"}},
        ),
    ],
    index: Annotated[
        int,
        Path(
            ge=0,
            le=10_000,
            description="the activity's index (``activities[].index``)",
            openapi_examples={"first": {"value": 0}},
        ),
    ],
    body: ActivityStatusRequest,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue the stored CarePlan with activity ``index``'s status changed, as an update with ``If-Match`` on the
    EHR's version. 404 when the gateway holds no such plan; 422 when it has no such activity."""

    async def build(wid: str, ctx: MapContext) -> _Target:
        stored, version = _for_ehr(await services.store.read(principal.tenant, "CarePlan", plan_id))
        try:
            resource = plan_mapper.with_activity_status(stored, index, body.status)
        except ValueError as exc:
            raise Unprocessable(str(exc), expression="index") from None
        return _Target("update", _checked(resource), resource_id=plan_id, if_match=version)

    payload = {"id": plan_id, "index": index, **body.model_dump(mode="json")}
    return await _submit(
        store, services, principal, response, "treatment_plan_activity", payload, idempotency_key, build
    )


@router.get(
    "/writebacks/{wid}",
    response_model=WritebackView,
    summary="Read a write-back's delivery status",
    responses=errors(404, why={404: "no such write-back for this tenant"}),
)
async def read_writeback(
    wid: Annotated[
        str,
        Path(
            description="the write-back's id (from the 202 answer)",
            openapi_examples={"id": {"value": "6f0e3c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b"}},
        ),
    ],
    principal: PrincipalDep,
    store: WritebacksDep,
) -> WritebackView:
    """Return the write-back: ``queued``, ``delivering``, ``delivered`` (with the EHR's id and version), ``failed``
    (with the EHR's OperationOutcome) or ``dead_lettered``."""
    found = await store.get(principal.tenant, wid)
    return WritebackView(
        id=found.id, kind=found.kind, status=found.status, method=found.method, resource_type=found.resource_type,
        resource_id=found.resource_id or None, created_at=found.created_at, updated_at=found.updated_at,
        attempts=found.attempts, ehr_id=found.ehr_id, ehr_version=found.ehr_version, outcome=found.outcome,
        error=found.error, links={"self": _link(found.id)},
    )  # fmt: skip


# -- the steps every route shares ---------------------------------------------------------------------------


async def _submit(
    store: Writebacks,
    services: Services,
    principal: Principal,
    response: Response,
    kind: Kind,
    payload: dict[str, Any],
    idempotency_key: str | None,
    build: Build,
) -> WritebackAccepted:
    """Replay an Idempotency-Key, else check the tenant's EHR takes it, build, validate, store and queue it."""
    tenant = principal.tenant
    request = canonical(payload)
    if idempotency_key is not None:
        found = await store.replay(tenant, idempotency_key, kind, request)
        if found is not None:
            return _accepted(response, found, replayed=True)
    config = services.clients.tenant(tenant)
    _require_capability(tenant, config.vendor, config.ehr, FAMILY[kind])
    wid = str(uuid.uuid4())
    now = now_instant()[0]
    ctx = MapContext(tenant=tenant, vendor=config.vendor, timezone=config.timezone, version_id="0", last_updated=now)
    try:
        target = await build(wid, ctx)
    except MappingError as exc:
        raise Unprocessable(f"the request cannot be written as FHIR: {exc}") from None
    draft = Draft(
        kind=kind, request=request, method=target.method, resource_type=str(target.resource["resourceType"]),
        resource=target.resource, resource_id=target.resource_id, if_match=target.if_match,
        if_none_exist=target.if_none_exist,
    )  # fmt: skip
    written, created = await store.create(tenant, wid, draft, now, idempotency_key)
    return _accepted(response, written, replayed=not created)


def _require_capability(tenant: str, vendor: str, ehr: object, family: str) -> None:
    if ehr is None:
        raise Unprocessable(
            f"tenant {tenant} has no EHR connector (no 'ehr' block in the clients file), so write-backs cannot be "
            "delivered; nothing was queued"
        )
    accepted = profile(vendor).writebacks
    if family not in accepted:
        raise Unprocessable(
            f"the tenant's EHR ({vendor}) does not accept {family} write-backs ({FHIR_TYPE[family]}); it accepts "
            f"{', '.join(accepted) or 'none'}; nothing was queued"
        )


def _accepted(response: Response, found: Writeback, *, replayed: bool) -> WritebackAccepted:
    response.headers["Location"] = _link(found.id)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return WritebackAccepted(id=found.id, status=found.status, kind=found.kind, links={"self": _link(found.id)})


def _link(wid: str) -> str:
    return f"{PREFIX}/writebacks/{wid}"


def _checked(resource: dict[str, Any], support: Support | None = None) -> dict[str, Any]:
    """Return the resource if it is valid R4, else raise 422 naming each element at fault."""
    issues = [i for i in validate_resource(resource, support=support) if i.severity in ("error", "fatal")]
    if issues:
        raise Unprocessable(f"the {resource.get('resourceType')} built for the EHR is not valid", issues=issues)
    return resource


def _for_ehr(stored: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Return a stored resource as the EHR knows it (no gateway version meta) and the EHR's versionId ("" if none)."""
    resource: dict[str, Any] = {}
    version = ""
    for key, value in copy.deepcopy(dict(stored)).items():
        if key != "meta" or not isinstance(value, Mapping):
            resource[key] = value
            continue
        meta = {k: v for k, v in value.items() if k not in ("versionId", "lastUpdated", "extension")}
        extensions = []
        for extension in value.get("extension") or []:
            url = extension.get("url") if isinstance(extension, Mapping) else None
            if url == EXT_EHR_VERSION_ID:
                version = text(extension.get("valueId") or "")
            elif url != EXT_EHR_LAST_UPDATED:
                extensions.append(extension)
        if extensions:
            meta["extension"] = extensions
        if meta:
            resource["meta"] = meta
    return resource, version


def _search(resource: Mapping[str, Any], system: str) -> str:
    """Return the If-None-Exist search on the resource's identifier of ``system``."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, Mapping) and identifier.get("system") == system and identifier.get("value"):
            return f"identifier={system}|{identifier['value']}"
    return ""


async def _thread(services: Services, tenant: str, body: MessageRequest) -> MessageThread:
    try:
        thread = MessageThread.model_validate(
            await services.feed.record(tenant, "message_thread", body.thread_id or "")
        )
    except NotFound:
        raise Unprocessable("thread_id names no message thread of this tenant", expression="thread_id") from None
    if thread.deleted or not thread.message_ids:
        raise Unprocessable("the thread has no messages left to reply to", expression="thread_id")
    if thread.patient is not None and thread.patient.reference not in (None, body.patient):
        raise Unprocessable("the thread is about another patient", expression="patient")
    return thread


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


async def _questionnaires(services: Services, tenant: str, canonical_url: str) -> Support | None:
    """Return the stored Questionnaire(s) a survey canonical names, for validating the answers, or None."""
    for url in dict.fromkeys([canonical_url, canonical_url.partition("|")[0]]):
        members = await services.redis.smembers(services.keys.url_index(tenant, "Questionnaire", url))
        found = await services.store.read_many(tenant, "Questionnaire", sorted(text(m) for m in members)[:10])
        if found:
            return Support(found)
    return None


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


def _utc(moment: datetime | None) -> str | None:
    """Return an aware datetime as FHIR's UTC form with Z (milliseconds only when it has them)."""
    if moment is None:
        return None
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"
