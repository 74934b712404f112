"""The risk-flag routes at ``/platform/v1/risk-flags``: list the open flags, read one, acknowledge one.

A flag belongs to a record (a survey response): for a client without the ``sensitive`` scope the flags of a
sensitive record do not exist, as the record does not (not listed, not counted against ``limit``, 404 by id).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from gateway.deps import PlatformPrincipal, ServicesDep
from gateway.errors import NotFound
from gateway.platform.disclosure import shown
from gateway.platform.risk import Flag
from gateway.services import Services
from gateway.web.openapi import errors

router = APIRouter(prefix="/platform/v1/risk-flags", tags=["Risk flags"])
FlagId = Annotated[
    str,
    Path(
        description="the flag's id (the id of its risk.flagged event)",
        max_length=64,
        openapi_examples={"id": {"value": "evt_5f0c3e7a9b1d4c2e8f6a0b3d5c7e9f1a"}},
    ),
]


async def _disclosed(services: Services, tenant: str, flag: Flag, scopes: frozenset[str]) -> bool:
    try:
        await services.feed.record(tenant, flag.record_type, flag.record_id, keep=lambda r: shown(r, scopes))
    except NotFound:
        return False
    return True


@router.get("", summary="List the risk flags nobody has acknowledged yet")
async def open_flags(
    services: ServicesDep,
    principal: PlatformPrincipal,
    limit: Annotated[
        int,
        Query(ge=1, le=1000, description="at most this many, oldest first", openapi_examples={"page": {"value": 50}}),
    ] = 100,
) -> dict[str, Any]:
    """Return the tenant's open flags (neither acknowledged nor escalated), oldest first."""
    listed: list[dict[str, Any]] = []
    skip = 0
    while len(listed) < limit:
        # Flags the client may not see are skipped before counting, so they never show as a short list.
        flags = await services.risks.open(principal.tenant, limit, skip=skip)
        listed += [f.view() for f in flags if await _disclosed(services, principal.tenant, f, principal.scopes)]
        if len(flags) < limit:
            break
        skip += len(flags)
    return {"risk_flags": listed[:limit]}


@router.get("/{flag_id}", summary="Read a risk flag", responses=errors(404, why={404: "no such risk flag"}))
async def read_flag(flag_id: FlagId, services: ServicesDep, principal: PlatformPrincipal) -> dict[str, Any]:
    """Return the flag: when it was raised, and who acknowledged it and when, or when it was escalated."""
    flag = await services.risks.get(principal.tenant, flag_id)
    if not await _disclosed(services, principal.tenant, flag, principal.scopes):
        raise NotFound("no such risk flag", expression="id")
    return flag.view()


@router.post(
    "/{flag_id}/acknowledge", summary="Acknowledge a risk flag", responses=errors(404, why={404: "no such risk flag"})
)
async def acknowledge(flag_id: FlagId, services: ServicesDep, principal: PlatformPrincipal) -> dict[str, Any]:
    """Record that the calling client acknowledged the flag now (a second acknowledgement changes nothing), so
    it is not escalated."""
    flag = await services.risks.get(principal.tenant, flag_id)
    if not await _disclosed(services, principal.tenant, flag, principal.scopes):
        raise NotFound("no such risk flag", expression="id")
    return (await services.risks.acknowledge(principal.tenant, flag_id, principal.client)).view()
