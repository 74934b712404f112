"""The platform API at ``/platform/v1``: normalized records, queries, and the resumable change feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import PlatformPrincipal, ServicesDep
from gateway.errors import BadRequest, NotFound
from gateway.platform import queries
from gateway.platform.disclosure import shown, shown_codes
from gateway.platform.feed import MAX_TYPE_PATTERNS, type_patterns
from gateway.web.openapi import AUTH_ERRORS, OTHER_ERRORS, errors
from gateway.web.responses import JSONBody
from mappers.model import Record
from mappers.registry import record_routes

router = APIRouter(prefix="/platform/v1", tags=["Platform"], responses={**errors(400), **AUTH_ERRORS, **OTHER_ERRORS})
MAX_LIMIT = 1000


_APPOINTMENT_RECORD: dict[str, Any] = {
    "id": "appt-1", "record_type": "appointment", "status": "scheduled", "start": "2026-12-10T14:00:00Z",
    "end": "2026-12-10T14:50:00Z", "patient": {"reference": "Patient/pat-1"},
    "source": {"resource_type": "Appointment", "fhir_id": "appt-1", "version_id": "1"},
}  # fmt: skip


class ChangesPage(BaseModel):
    """A page of the change feed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"events": [{"id": "1767261600000-0", "type": "appointment.created", "record_type": "appointment",
                             "record_id": "appt-1", "occurred_at": "2026-12-01T10:00:00.000Z",
                             "record": _APPOINTMENT_RECORD, "cursor": "MTc2NzI2MTYwMDAwMC0w"}],
                 "next_cursor": "MTc2NzI2MTYwMDAwMC0w"}
            ]
        }
    )  # fmt: skip

    events: list[dict[str, Any]]
    next_cursor: str = Field(description="pass as cursor to read on; the same cursor when nothing is new")


class RecordsPage(BaseModel):
    """A page of records."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"records": [_APPOINTMENT_RECORD], "next_cursor": None}]})

    records: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


RecordKind = Annotated[
    str,
    Path(
        description="the kind of record; any other name is 404",
        openapi_examples={"appointments": {"value": "appointments"}, "patients": {"value": "patients"}},
        json_schema_extra={"enum": sorted(record_routes())},
    ),
]
_CURSOR = Query(
    description="the next_cursor of the previous page",
    openapi_examples={"next page": {"value": "cjF8MTc2NzI2MTYwMHxhcHB0LTE"}},
)
_LIMIT = Query(
    ge=1, description=f"page size (at most {MAX_LIMIT} are returned)", openapi_examples={"page": {"value": 50}}
)


def _kind(route: str) -> tuple[str, type[Record]]:
    served = record_routes()
    if route not in served:
        raise NotFound(f"no such kind of record; known: {', '.join(sorted(served))}", expression="route")
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


@router.get(
    "/changes",
    response_model=ChangesPage,
    summary="Read the change feed",
    responses=errors(410, why={410: "the cursor is older than the feed's retention; the issue names the oldest valid"}),
)
async def changes(
    request: Request,
    services: ServicesDep,
    principal: PlatformPrincipal,
    cursor: Annotated[
        str | None,
        Query(
            description="the next_cursor of the previous page; absent to read from the oldest retained event",
            openapi_examples={"next page": {"value": "MTc2NzI2MTYwMDAwMC0w"}},
        ),
    ] = None,
    limit: Annotated[int, _LIMIT] = 100,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="seconds to long-poll for an event when there is none (capped by the gateway)",
            openapi_examples={"long poll": {"value": 25}},
        ),
    ] = 0,
    types: Annotated[
        list[str] | None,
        Query(
            description=f"event types; * matches, e.g. appointment.* (at most {MAX_TYPE_PATTERNS}, repeated or "
            "comma-separated)",
            openapi_examples={"appointments": {"value": ["appointment.*"]}},
        ),
    ] = None,
) -> JSONBody:
    """Return the tenant's events after ``cursor`` in order; ``wait`` long-polls up to that many seconds.

    A cursor from before the feed's retention window is answered 410, naming the oldest valid cursor.
    """
    wanted = type_patterns(types or [])
    wait = min(wait, services.settings.feed_max_wait_seconds)
    scopes = principal.scopes
    page = await services.feed.changes(
        principal.tenant, cursor, min(limit, MAX_LIMIT), wait, wanted or None,
        keep=lambda e: shown_codes(e.codes, scopes),
    )  # fmt: skip
    # The events are the worker's own output, spliced in as stored: neither parsed nor re-validated.
    return JSONBody(page.json())


@router.get("/schema", summary="JSON Schema of every record type")
async def schema(principal: PlatformPrincipal) -> dict[str, Any]:
    """Return the JSON Schema of each normalized record, by record type."""
    return {record_type: model.model_json_schema() for record_type, model in record_routes().values()}


@router.get(
    "/{route}",
    response_model=RecordsPage,
    summary="Query records of one kind",
    responses=errors(404, why={404: "no such kind of record"}),
)
async def query(
    route: RecordKind,
    request: Request,
    services: ServicesDep,
    principal: PlatformPrincipal,
    patient: Annotated[
        str | None,
        Query(
            description="the patient: Patient/<id> or <id>", openapi_examples={"patient": {"value": "Patient/pat-1"}}
        ),
    ] = None,
    status: Annotated[
        str | None, Query(description="the record's status", openapi_examples={"scheduled": {"value": "scheduled"}})
    ] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            description="main date on or after (ISO 8601)",
            openapi_examples={"date": {"value": "2026-12-01"}, "instant": {"value": "2026-12-01T00:00:00Z"}},
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="main date before (ISO 8601)", openapi_examples={"date": {"value": "2027-01-01"}}),
    ] = None,
    updated_since: Annotated[
        str | None,
        Query(
            description="changed after; deleted records included",
            openapi_examples={"instant": {"value": "2026-12-01T10:00:00Z"}},
        ),
    ] = None,
    limit: Annotated[int, _LIMIT] = 100,
    cursor: Annotated[str | None, _CURSOR] = None,
) -> RecordsPage:
    """Query records (appointments, messages, ...) by patient, status, main date and update time, in date order."""
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
    tenant, scopes = principal.tenant, principal.scopes
    records, next_cursor = await queries.run(
        services.redis, services.keys, tenant, record_type, q,
        load=lambda ids: services.feed.records(tenant, record_type, ids), keep=lambda r: shown(r, scopes),
    )  # fmt: skip
    return RecordsPage(records=records, next_cursor=next_cursor)


@router.get(
    "/{route}/{rid}",
    summary="Read one record",
    responses={
        200: {"description": "the record", "content": {"application/json": {"example": _APPOINTMENT_RECORD}}},
        **errors(404, why={404: "no such kind of record, or no record with that id the client may see"}),
    },
)  # fmt: skip
async def record(
    route: RecordKind,
    rid: Annotated[str, Path(description="the record's id", openapi_examples={"id": {"value": "appt-1"}})],
    request: Request,
    services: ServicesDep,
    principal: PlatformPrincipal,
) -> dict[str, Any]:
    """Return the record of that kind whose id is ``rid``; a sensitive one is 404 without the ``sensitive`` scope."""
    record_type, _ = _kind(route)
    scopes = principal.scopes
    return await services.feed.record(principal.tenant, record_type, rid, keep=lambda r: shown(r, scopes))
