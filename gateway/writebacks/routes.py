"""The write-back routes at ``/platform/v1``: what patients and clinicians do on the platform, sent to the EHR.

Each route validates its request, maps it to FHIR R4 with the tenant's vendor profile, validates that resource,
and queues it on the tenant's outbound stream for the connectors (``gateway.writebacks.store``), answering 202 with the
write-back's id. A tenant with no EHR connector (no ``ehr`` block in the clients file), or whose vendor's EHR does
not take that kind of write, is refused with 422 before anything is queued. Request and FHIR errors are 422
OperationOutcomes naming the field or element; an ``Idempotency-Key`` makes a retry return the first write-back.
A sensitive thread, appointment or plan is, for a client without the ``sensitive`` scope, no target at all: the
same 404 as an unknown id (a thread_id naming no thread is 404 too), and nothing is queued.

A platform-created record has no FHIR source yet: its ``source`` block names the resource it becomes, with the
write-back id as ``fhir_id`` and version ``"0"`` (``MapContext(version_id="0")``); the EHR assigns the real id and
version, which ``GET /platform/v1/writebacks/{id}`` shows once delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Header, Path, Response

from conformance.validator import Support
from gateway.auth import Principal
from gateway.clock import instant
from gateway.deps import PlatformPrincipal, ServicesDep
from gateway.errors import NotFound, Unprocessable
from gateway.platform.disclosure import SCOPE, is_sensitive, resource_is_sensitive, shown
from gateway.services import Services
from gateway.web.openapi import errors
from gateway.writebacks import builders
from gateway.writebacks.builders import Target
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
from mappers.context import MapContext
from mappers.errors import MappingError
from mappers.message import MessageThread
from mappers.vendors import profile

PREFIX: Final = "/platform/v1"
FHIR_TYPE: Final[Mapping[str, str]] = {
    "message": "Communication", "survey_response": "QuestionnaireResponse", "appointment": "Appointment",
    "treatment_plan": "CarePlan",
}  # fmt: skip


router = APIRouter(
    prefix=PREFIX,
    tags=["Write-backs"],
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


async def _writebacks(services: ServicesDep) -> Writebacks:
    return services.writebacks


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


Build = Callable[[str, MapContext], Awaitable[Target]]


@router.post("/messages", status_code=202, response_model=WritebackAccepted, summary="Send a message to the EHR")
async def post_message(
    body: MessageRequest,
    response: Response,
    services: ServicesDep,
    principal: PlatformPrincipal,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue a Communication (conditional create on ``urn:fhir-gateway:platform-message|<id>``).

    With ``thread_id`` it is a reply in that thread: it names the thread's first message as ``partOf`` and its
    last as ``inResponseTo`` (a topic thread: its topic), and carries the thread's security labels.
    """

    async def build(wid: str, ctx: MapContext) -> Target:
        thread = await _thread(services, principal.tenant, principal.scopes, body) if body.thread_id else None
        return builders.message(body, wid, ctx, thread)

    payload = body.model_dump(mode="json")
    return await _submit(store, services, principal, response, "message", payload, idempotency_key, build)


@router.post(
    "/survey-responses", status_code=202, response_model=WritebackAccepted, summary="Send a survey response to the EHR"
)
async def post_survey_response(
    body: SurveyResponseRequest,
    response: Response,
    services: ServicesDep,
    principal: PlatformPrincipal,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue a QuestionnaireResponse (conditional create on its identifier), validated against the survey's
    Questionnaire when the gateway holds it."""

    async def build(wid: str, ctx: MapContext) -> Target:
        found = await services.store.by_canonical(principal.tenant, "Questionnaire", body.survey)
        return builders.survey_response(body, wid, ctx, Support(found[:10]) if found else None)

    payload = body.model_dump(mode="json")
    return await _submit(store, services, principal, response, "survey_response", payload, idempotency_key, build)


@router.post(
    "/appointments", status_code=202, response_model=WritebackAccepted, summary="Request or book an appointment"
)
async def post_appointment(
    body: AppointmentRequest,
    response: Response,
    services: ServicesDep,
    principal: PlatformPrincipal,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue an Appointment, ``proposed`` (a request) or ``booked`` (conditional create on
    ``urn:fhir-gateway:platform-appointment|<id>``). A booking needs ``start`` and ``end``; a request may give
    them, or ``requested_period``."""

    async def build(wid: str, ctx: MapContext) -> Target:
        return builders.appointment(body, wid, ctx)

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
    principal: PlatformPrincipal,
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

    async def build(wid: str, ctx: MapContext) -> Target:
        stored, sensitive = await _stored(services, principal, "Appointment", "appointment", appointment_id)
        return replace(builders.cancellation(stored, appointment_id, reason, ctx), sensitive=sensitive)

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
    principal: PlatformPrincipal,
    store: WritebacksDep,
    idempotency_key: IdempotencyKey = None,
) -> WritebackAccepted:
    """Queue the stored CarePlan with activity ``index``'s status changed, as an update with ``If-Match`` on the
    EHR's version. 404 when the gateway holds no such plan; 422 when it has no such activity."""

    async def build(wid: str, ctx: MapContext) -> Target:
        stored, sensitive = await _stored(services, principal, "CarePlan", "treatment_plan", plan_id)
        return replace(builders.activity_status(stored, plan_id, index, body.status, ctx), sensitive=sensitive)

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
    principal: PlatformPrincipal,
    store: WritebacksDep,
) -> WritebackView:
    """Return the write-back: ``queued``, ``delivering``, ``delivered`` (with the EHR's id and version), ``failed``
    (with the EHR's OperationOutcome) or ``dead_lettered``."""
    found = await store.get(principal.tenant, wid)
    if found.sensitive and SCOPE not in principal.scopes:
        raise NotFound("no such write-back", expression="id")  # as for an id nobody holds
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
        # A write-back made from a labelled record is replayed only to a client that may see it; for another the
        # request goes on as new, and is refused as one (its target does not exist for that client).
        if found is not None and (SCOPE in principal.scopes or not found.sensitive):
            return _accepted(response, found, replayed=True)
    config = services.clients.tenant(tenant)
    _require_capability(tenant, config.vendor, config.ehr, FAMILY[kind])
    wid = str(uuid.uuid4())
    now = instant(services.clock())
    ctx = MapContext(tenant=tenant, vendor=config.vendor, timezone=config.timezone, version_id="0", last_updated=now)
    try:
        target = await build(wid, ctx)
    except MappingError as exc:
        raise Unprocessable(f"the request cannot be written as FHIR: {exc}") from None
    draft = Draft(
        kind=kind, request=request, method=target.method, resource_type=str(target.resource["resourceType"]),
        resource=target.resource, resource_id=target.resource_id, if_match=target.if_match,
        if_none_exist=target.if_none_exist, sensitive=target.sensitive or resource_is_sensitive(target.resource),
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


async def _thread(services: Services, tenant: str, scopes: frozenset[str], body: MessageRequest) -> MessageThread:
    try:
        found = await services.feed.record(
            tenant, "message_thread", body.thread_id or "", keep=lambda r: shown(r, scopes)
        )
    except NotFound:
        # A sensitive thread the client may not see is answered as an unknown one: it does not exist for it.
        raise NotFound("thread_id names no message thread of this tenant", expression="thread_id") from None
    thread = MessageThread.model_validate(found)
    if thread.deleted or not thread.message_ids:
        raise Unprocessable("the thread has no messages left to reply to", expression="thread_id")
    if thread.patient is not None and thread.patient.reference not in (None, body.patient):
        raise Unprocessable("the thread is about another patient", expression="patient")
    return thread


async def _stored(
    services: Services, principal: Principal, rtype: str, record_type: str, rid: str
) -> tuple[dict[str, Any], bool]:
    """Return the stored resource a write-back updates and whether it is sensitive; a sensitive one is, without the
    scope, as unknown as an id the gateway never held (the same 404), whether its label is on the resource or on the
    record made from it."""
    tenant = principal.tenant
    [record] = await services.feed.records(tenant, record_type, [rid])
    hidden = record is not None and not shown(record, principal.scopes)
    try:
        stored = await services.store.read(tenant, rtype, rid)
    except NotFound:  # Gone (a deletion) too
        if hidden:
            raise NotFound(f"no {rtype} has that id", expression=rtype) from None
        raise
    sensitive = (record is not None and is_sensitive(record)) or resource_is_sensitive(stored)
    if sensitive and SCOPE not in principal.scopes:
        raise NotFound(f"no {rtype} has that id", expression=rtype)
    return stored, sensitive
