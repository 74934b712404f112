"""The platform API at ``/platform/v1``: normalized records and the resumable change feed."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from gateway.auth import Principal
from gateway.connection import text
from gateway.errors import BadRequest, NotFound
from gateway.services import Services, ServicesDep
from mappers.registry import MAPPED, record_routes

router = APIRouter(prefix="/platform/v1", tags=["Platform"])
_APPOINTMENT = MAPPED["Appointment"].record_type
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
) -> ChangesPage:
    """Return the tenant's events after ``cursor`` in order; ``wait`` long-polls up to that many seconds."""
    principal = _principal(services, request)
    wait = min(wait, services.settings.feed_max_wait_seconds)
    page = await services.feed.changes(principal.tenant, cursor, min(limit, MAX_LIMIT), wait)
    return ChangesPage(events=page.events, next_cursor=page.next_cursor)


@router.get("/schema", summary="JSON Schema of every record type")
async def schema(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Return the JSON Schema of each normalized record, by record type."""
    _principal(services, request)
    return {record_type: model.model_json_schema() for record_type, model in record_routes().values()}


@router.get("/appointments", response_model=RecordsPage, summary="Query appointments")
async def appointments(
    request: Request,
    services: ServicesDep,
    patient: str | None = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: str | None = None,
) -> RecordsPage:
    """Query appointments by patient, start range (``from``, ``to``) and status, ordered by start."""
    principal = _principal(services, request)
    tenant, keys, redis = principal.tenant, services.keys, services.redis
    limit = min(limit, MAX_LIMIT)
    low, high = _epoch(from_, "from"), _epoch(to, "to")
    offset = _decode_offset(cursor)
    start_key = keys.record_sort_index(tenant, _APPOINTMENT)
    if patient:
        ref = patient if "/" in patient else f"Patient/{patient}"
        members = sorted(text(m) for m in await redis.smembers(keys.record_patient_index(tenant, _APPOINTMENT, ref)))
        pipe = redis.pipeline(transaction=False)
        for rid in members:
            pipe.zscore(start_key, rid)
        scored = sorted(
            (score, rid)
            for rid, score in zip(members, await pipe.execute(), strict=True)
            if score is not None and (low is None or score >= low) and (high is None or score < high)
        )
        ids = [rid for _, rid in scored]
    else:
        raw = await redis.zrangebyscore(
            start_key, "-inf" if low is None else low, "+inf" if high is None else f"({high}"
        )
        ids = [text(m) for m in raw]
    records: list[dict[str, Any]] = []
    position = offset
    # Status is filtered after the index lookup; read in chunks until the page is full.
    while position < len(ids) and len(records) < limit:
        for record in await services.feed.records(tenant, _APPOINTMENT, ids[position : position + limit]):
            position += 1
            if record is not None and (status is None or record.get("status") == status):
                records.append(record)
                if len(records) >= limit:
                    break
    next_cursor = _encode_offset(position) if position < len(ids) else None
    return RecordsPage(records=records, next_cursor=next_cursor)


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o1:{offset}".encode()).decode().rstrip("=")


def _decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "o1" or not number.isdigit():
            raise ValueError
        return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor is not one this gateway issued", expression="cursor") from None


@router.get("/{route}/{rid}", summary="Read one record")
async def record(route: str, rid: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Return the record of that kind (appointments, messages, ...) whose id is ``rid``."""
    principal = _principal(services, request)
    served = record_routes()
    if route not in served:
        raise NotFound(f"no record kind {route[:40]!r}; known: {', '.join(sorted(served))}")
    return await services.feed.record(principal.tenant, served[route][0], rid)
