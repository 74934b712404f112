"""The webhook routes at ``/platform/v1/subscriptions``: register, list, read and remove subscriptions; list and
replay their dead letters. Tenant-scoped; platform clients only."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.deps import PlatformPrincipal, ServicesDep
from gateway.errors import BadRequest, NotFound, Unprocessable
from gateway.platform.disclosure import shown_event
from gateway.web.openapi import errors
from gateway.webhooks.subscriptions import (
    MAX_PATTERNS,
    MAX_SECRET,
    MIN_SECRET,
    PATTERN,
    DeadLetter,
    Subscription,
    iso,
    stream_id,
    url_refusal,
)

router = APIRouter(prefix="/subscriptions", tags=["Webhooks"])
SubscriptionId = Annotated[
    str,
    Path(
        description="the subscription's id", openapi_examples={"id": {"value": "sub_5f0c3e7a9b1d4c2e8f6a0b3d5c7e9f1a"}}
    ),
]
_NO_SUBSCRIPTION = errors(404, why={404: "no such subscription for this tenant"})


class SubscriptionRequest(BaseModel):
    """A new subscription."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.org/fhir-gateway",
                    "events": ["appointment.*", "survey_response.completed"],
                    "secret": "a-long-random-shared-secret-0f3c",
                }
            ]
        },
    )

    url: str = Field(description="the receiver: https (plain http only to loopback in development mode)")
    events: list[str] = Field(description="event types to deliver; * matches, e.g. appointment.*")
    secret: SecretStr = Field(
        description=f"shared secret for the signature: {MIN_SECRET} to {MAX_SECRET} printable ASCII characters"
    )


class SubscriptionView(BaseModel):
    """A subscription as the API shows it (never its secret)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "sub_5f0c3e7a9b1d4c2e8f6a0b3d5c7e9f1a",
                    "url": "https://hooks.example.org/fhir-gateway",
                    "events": ["appointment.*"],
                    "created_at": "2026-12-01T10:00:00.000Z",
                    "status": "active",
                    "failed_attempts": 0,
                    "last_error": None,
                    "next_attempt_at": None,
                    "dead_letters": 0,
                }
            ]
        }
    )

    id: str
    url: str
    events: list[str]
    created_at: str
    status: str = Field(description="active, retrying while a delivery is failing, or paused by an operator")
    failed_attempts: int = Field(description="failed attempts of the delivery being retried")
    last_error: str | None = Field(
        description="the last failure, as a class: 'delivery failed: HTTP <status>', "
        "'... timeout', '... connection refused', '... connection failed', '... refused address' (never an address "
        "or a port)"
    )
    next_attempt_at: str | None
    dead_letters: int


class SubscriptionList(BaseModel):
    """The tenant's subscriptions, oldest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"subscriptions": []}]})

    subscriptions: list[SubscriptionView]


class DeadLetterView(BaseModel):
    """A delivery that failed every attempt; ``event`` is shown as this client may see it."""

    id: str
    event_id: str | None
    event_type: str | None
    attempts: int
    last_status: int | None
    last_error: str | None
    failed_at: str
    event: dict[str, Any]


class DeadLetterPage(BaseModel):
    """A page of dead letters, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"dead_letters": [{"id": "1767261600000-0", "event_id": "1767261500000-0",
                                   "event_type": "appointment.updated", "attempts": 8, "last_status": 503,
                                   "last_error": "delivery failed: HTTP 503", "failed_at": "2026-12-01T10:00:00.000Z",
                                   "event": {"id": "1767261500000-0", "type": "appointment.updated"}}],
                 "next_cursor": None}
            ]
        }
    )  # fmt: skip

    dead_letters: list[DeadLetterView]
    next_cursor: str | None


class ReplayRequest(BaseModel):
    """Which dead letters to deliver again: ``ids``, or ``all``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["1767261600000-0"]}]})

    ids: list[str] = Field(default_factory=list, max_length=1000)
    all: bool = False


class ReplayResult(BaseModel):
    """The dead letters queued for delivery again, and the ids that were not dead letters of the subscription."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"replayed": ["1767261600000-0"], "not_found": []}]})

    replayed: list[str]
    not_found: list[str]


def _view(sub: Subscription, dead_letters: int) -> SubscriptionView:
    retrying = bool(sub.pending)
    return SubscriptionView(
        id=sub.id, url=sub.url, events=list(sub.events), created_at=iso(sub.created_at),
        status="paused" if sub.paused else "retrying" if retrying else "active",
        failed_attempts=sub.attempt if retrying else 0,
        last_error=sub.last_error or None, next_attempt_at=iso(sub.next_at) if retrying and sub.next_at else None,
        dead_letters=dead_letters,
    )  # fmt: skip


def _dead_letter_view(d: DeadLetter) -> DeadLetterView:
    return DeadLetterView(
        id=d.id, event_id=d.event.get("id"), event_type=d.event.get("type"), attempts=d.attempts,
        last_status=d.last_status, last_error=d.last_error or None, failed_at=iso(d.failed_at), event=d.event,
    )  # fmt: skip


def _check(body: SubscriptionRequest, development: bool) -> list[str]:
    if refusal := url_refusal(body.url, development=development):
        raise Unprocessable(refusal[1], expression=refusal[0])
    secret = body.secret.get_secret_value()
    if not (MIN_SECRET <= len(secret) <= MAX_SECRET and secret.isascii() and secret.isprintable()):
        raise Unprocessable(
            f"the secret must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters", expression="secret"
        )
    events = list(dict.fromkeys(e.strip() for e in body.events))
    if not events or len(events) > MAX_PATTERNS:
        raise Unprocessable(f"events must list 1 to {MAX_PATTERNS} event types or patterns", expression="events")
    for i, pattern in enumerate(events):
        if not PATTERN.match(pattern):
            raise Unprocessable(
                "an event type or pattern is letters, digits, '_', '.', '-' and the wildcards * ? [ ]",
                expression=f"events[{i}]",
            )
    return events


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionView,
    summary="Register a webhook",
    responses=errors(
        422,
        why={
            422: "the url, secret or events are refused (for example plain http, a private address, or more than 100 "
            "subscriptions)"
        },
    ),
)
async def create_subscription(
    body: SubscriptionRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PlatformPrincipal,
) -> SubscriptionView:
    """Register a receiver for the tenant's change events whose type matches ``events``.

    Each matching event after this moment is POSTed to ``url`` as JSON, in feed order, signed in
    ``Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the secret>``. The URL must
    be https (plain http only to a loopback host, and only under ``fhir-gateway run``), without credentials or a
    fragment, and its host must be public: a loopback, private, link-local, CGNAT, unique-local, multicast or
    reserved address (literal or what the name resolves to) or a cloud metadata name is 422 unless the operator
    allowed it (``GATEWAY_OUTBOUND_ALLOW``); every delivery checks the address again. The secret is never shown
    again.
    """
    events = _check(body, services.settings.development)
    host = urlsplit(body.url).hostname or ""
    if (refused := await services.settings.outbound().registration_refusal(host)) is not None:
        raise Unprocessable(
            f"the url's host may not be called: {refused} (an operator can allow it: GATEWAY_OUTBOUND_ALLOW)",
            expression="url",
        )
    sub = await services.subscriptions.create(
        principal.tenant, url=body.url, events=events, secret=body.secret.get_secret_value(),
        owner=principal.client, scopes=principal.scopes,
    )  # fmt: skip
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{sub.id}"
    return _view(sub, 0)


@router.get("", response_model=SubscriptionList, summary="List webhooks")
async def list_subscriptions(services: ServicesDep, principal: PlatformPrincipal) -> SubscriptionList:
    """Return the tenant's subscriptions, oldest first (at most 100 per tenant), with their delivery status."""
    store = services.subscriptions
    subs = await store.all(principal.tenant)
    counts = await store.dead_letter_count(principal.tenant, [s.id for s in subs])
    return SubscriptionList(subscriptions=[_view(s, counts[s.id]) for s in subs])


@router.get("/{sid}", response_model=SubscriptionView, summary="Read one webhook", responses=_NO_SUBSCRIPTION)
async def read_subscription(
    sid: SubscriptionId, services: ServicesDep, principal: PlatformPrincipal
) -> SubscriptionView:
    """Return one subscription of the tenant, with its delivery status."""
    store = services.subscriptions
    sub = await store.get(principal.tenant, sid)
    return _view(sub, (await store.dead_letter_count(principal.tenant, [sid]))[sid])


@router.delete(
    "/{sid}", status_code=204, response_class=Response, summary="Remove a webhook", responses=_NO_SUBSCRIPTION
)
async def delete_subscription(sid: SubscriptionId, services: ServicesDep, principal: PlatformPrincipal) -> Response:
    """Remove the subscription with its dead letters; no delivery starts after this answer."""
    if not await services.subscriptions.delete(principal.tenant, sid):
        raise NotFound("no such subscription", expression="id")
    return Response(status_code=204)


@router.get(
    "/{sid}/dead-letters",
    response_model=DeadLetterPage,
    summary="List a webhook's dead letters",
    responses=_NO_SUBSCRIPTION,
)
async def list_dead_letters(
    sid: SubscriptionId,
    request: Request,
    services: ServicesDep,
    principal: PlatformPrincipal,
    limit: Annotated[
        int, Query(ge=1, description="page size (at most 1000)", openapi_examples={"page": {"value": 50}})
    ] = 100,
    cursor: Annotated[
        str | None,
        Query(
            description="the next_cursor of the previous page", openapi_examples={"next": {"value": "1767261600000-0"}}
        ),
    ] = None,
) -> DeadLetterPage:
    """Return deliveries that failed every attempt, oldest first; those of sensitive records only with the
    ``sensitive`` scope, as elsewhere."""
    store = services.subscriptions
    await store.get(principal.tenant, sid)
    after = stream_id(cursor, "cursor") if cursor else None
    want = min(limit, 1000)
    views: list[DeadLetterView] = []
    while True:
        # Dead letters of sensitive events are skipped before counting, so they never show as a short page.
        letters, next_cursor = await store.dead_letters(principal.tenant, sid, after=after, limit=want - len(views))
        views += [_dead_letter_view(d) for d in letters if shown_event(d.event, principal.scopes)]
        if next_cursor is None or len(views) >= want:
            return DeadLetterPage(dead_letters=views, next_cursor=next_cursor)
        after = next_cursor


@router.post(
    "/{sid}/dead-letters/replay",
    status_code=202,
    response_model=ReplayResult,
    summary="Deliver dead letters again",
    responses=_NO_SUBSCRIPTION,
)
async def replay_dead_letters(
    sid: SubscriptionId, body: ReplayRequest, services: ServicesDep, principal: PlatformPrincipal
) -> ReplayResult:
    """Queue dead letters (``ids``, or ``all``) for delivery again, ahead of the feed; each gets fresh attempts.

    Replayed events arrive after events delivered since they failed; receivers order by ``occurred_at`` if needed.
    """
    store = services.subscriptions
    await store.get(principal.tenant, sid)
    if not body.all and not body.ids:
        raise BadRequest("name dead-letter ids to replay, or pass all: true", expression="ids")
    ids = None if body.all else list(dict.fromkeys(stream_id(i, f"ids[{n}]") for n, i in enumerate(body.ids)))
    replayed = await store.replay(principal.tenant, sid, ids)
    missing = [i for i in ids or [] if i not in set(replayed)]
    return ReplayResult(replayed=replayed, not_found=missing)
