"""``GET /platform/v1/audit``: the tenant's audit trail, for platform clients with the ``audit`` scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gateway.clock import epoch_of
from gateway.deps import PlatformPrincipal, ServicesDep
from gateway.errors import BadRequest, Forbidden
from gateway.web.openapi import AUTH_ERRORS, OTHER_ERRORS, errors

AUDIT_SCOPE = "audit"
MAX_LIMIT = 1000
router = APIRouter(prefix="/platform/v1", tags=["Audit"], responses={**errors(400), **AUTH_ERRORS, **OTHER_ERRORS})


def _ex(value: Any) -> dict[str, Any]:
    return {"example": {"value": value}}


def _ms(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    epoch = epoch_of(value)
    if epoch is None:
        raise BadRequest(f"{name} must be an ISO 8601 date or date-time", expression=name)
    return max(0, int(epoch * 1000))  # before 1970: from the start (a stream id is never negative)


@router.get("/audit", summary="Read the tenant's audit trail (scope: audit)")
async def audit_entries(
    services: ServicesDep,
    principal: PlatformPrincipal,
    patient: Annotated[
        str | None,
        Query(description="entries about this patient: Patient/<id> or <id>", openapi_examples=_ex("Patient/pat-1")),
    ] = None,
    client: Annotated[
        str | None, Query(description="entries of this client (its name)", openapi_examples=_ex("epic-prod"))
    ] = None,
    from_: Annotated[
        str | None,
        Query(alias="from", description="recorded on or after (ISO 8601)", openapi_examples=_ex("2026-12-01")),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="recorded on or before (ISO 8601)", openapi_examples=_ex("2026-12-02T00:00:00Z")),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            description="the next_cursor of the previous page",
            pattern=r"^\d{1,20}-\d{1,20}$",
            openapi_examples=_ex("1796270445122-1"),
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="entries per page", openapi_examples=_ex(100))] = 100,
) -> dict[str, Any]:
    """Return audit entries (who, what, when, outcome, from where) oldest first, a page at a time."""
    if AUDIT_SCOPE not in principal.scopes:
        raise Forbidden(f"reading the audit trail needs the '{AUDIT_SCOPE}' scope", expression="scope")
    if cursor is not None and any(int(part) >= 2**64 for part in cursor.split("-")):
        raise BadRequest("the cursor is not one this API gave", expression="cursor")
    page = await services.audit.entries(
        principal.tenant,
        since_ms=_ms(from_, "from"),
        until_ms=_ms(to, "to"),
        client=client,
        patient=(patient if "/" in patient else f"Patient/{patient}") if patient else None,
        cursor=cursor,
        limit=limit,
    )
    return {"entries": page.entries, "next_cursor": page.next_cursor}
