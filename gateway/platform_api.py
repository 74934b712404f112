"""The platform API at ``/platform/v1``: normalized records, queries, and the resumable change feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from gateway import queries, webhook_api
from gateway.auth import Principal
from gateway.disclosure import visible, visible_event
from gateway.errors import BadRequest, NotFound
from gateway.services import Services, ServicesDep
from mappers.model import Record
from mappers.registry import record_routes

router = APIRouter(prefix="/platform/v1", tags=["Platform"])
router.include_router(webhook_api.router)  # before the generic /{route} routes, which would take /subscriptions
MAX_LIMIT = 1000


class ChangesPage(BaseModel):
    """A page of the change feed."""

    events: list[dict[str, Any]]
    next_cursor: str


class RecordsPage(BaseModel):
    """A page of records."""

    records: list[dict[str, Any]]
    next_cursor: str | None


def _principal(services: Services, request: Request) -> Principal:
    return services.auth.require(request.headers.get("authorization"), "platform")


def _kind(route: str) -> tuple[str, type[Record]]:
    served = record_routes()
    if route not in served:
        raise NotFound(f"no record kind {route[:40]!r}; known: {', '.join(sorted(served))}", expression="route")
    return served[route]


def _epoch(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or date-time", expression=name) from None
    if moment.tzinfo is None:
        if "T" in value:
            raise BadRequest(f"{name} needs a time zone (for example Z)", expression=name)
        moment = moment.replace(tzinfo=UTC)  # a bare date is that day in UTC
    return moment.timestamp()


@router.get("/changes", response_model=ChangesPage, summary="Read the change feed")
async def changes(
    request: Request,
    services: ServicesDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    wait: Annotated[float, Query(ge=0)] = 0,
    types: Annotated[list[str] | None, Query(description="event types; * matches, e.g. appointment.*")] = None,
) -> ChangesPage:
    """Return the tenant's events after ``cursor`` in order; ``wait`` long-polls up to that many seconds.

    A cursor from before the feed's retention window is answered 410, naming the oldest valid cursor.
    """
    principal = _principal(services, request)
    wanted = [t.strip() for raw in types or [] for t in raw.split(",") if t.strip()]
    wait = min(wait, services.settings.feed_max_wait_seconds)
    page = await services.feed.changes(principal.tenant, cursor, min(limit, MAX_LIMIT), wait, wanted or None)
    events = [visible_event(e, principal.scopes) for e in page.events]
    return ChangesPage(events=events, next_cursor=page.next_cursor)


@router.get("/schema", summary="JSON Schema of every record type")
async def schema(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Return the JSON Schema of each normalized record, by record type."""
    _principal(services, request)
    return {record_type: model.model_json_schema() for record_type, model in record_routes().values()}


@router.get("/{route}", response_model=RecordsPage, summary="Query records of one kind")
async def query(
    route: str,
    request: Request,
    services: ServicesDep,
    patient: str | None = None,
    status: str | None = None,
    from_: Annotated[str | None, Query(alias="from", description="main date on or after (ISO 8601)")] = None,
    to: Annotated[str | None, Query(description="main date before (ISO 8601)")] = None,
    updated_since: Annotated[str | None, Query(description="changed after; deleted records included")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: str | None = None,
) -> RecordsPage:
    """Query records (appointments, messages, ...) by patient, status, main date and update time, in date order."""
    principal = _principal(services, request)
    record_type, _ = _kind(route)
    q = queries.RecordQuery(
        patient=(patient if "/" in patient else f"Patient/{patient}") if patient else None,
        status=status,
        low=_epoch(from_, "from"),
        high=_epoch(to, "to"),
        updated_since=_epoch(updated_since, "updated_since"),
        limit=min(limit, MAX_LIMIT),
        cursor=queries.decode_cursor(cursor),
    )
    ids, next_cursor = await queries.run(services.redis, services.keys, principal.tenant, record_type, q)
    found = await services.feed.records(principal.tenant, record_type, ids)
    records = [visible(r, principal.scopes) for r in found if r is not None]
    return RecordsPage(records=records, next_cursor=next_cursor)


@router.get("/{route}/{rid}", summary="Read one record")
async def record(route: str, rid: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Return the record of that kind whose id is ``rid``."""
    principal = _principal(services, request)
    record_type, _ = _kind(route)
    return visible(await services.feed.record(principal.tenant, record_type, rid), principal.scopes)
