"""The FHIR operations are called with their path segments and headers by ``gateway.web.routing.FhirRoute``,
without FastAPI's general request handling; what FastAPI would add where a route is included still applies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gateway.web import responses
from gateway.web.routing import FhirRoute
from tests.conftest import EHR_A, Gateway
from tests.gateway.fixtures import appointment


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths FastAPI solved declared parameters for, in order (its general request handler does, per request)."""
    paths: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    yield paths


async def test_fhir_requests_skip_fastapis_parameter_solving_and_keep_their_answers(
    edge: Gateway, solved: list[str]
) -> None:
    rid = "routing-1"
    created = await edge.ehr("PUT", f"/Appointment/{rid}", json={**appointment(), "id": rid})
    assert created.status_code == 201, created.text
    stale = await edge.ehr(
        "PUT", f"/Appointment/{rid}", json={**appointment(), "id": rid, "status": "arrived"},
        headers={"If-Match": 'W/"7"'},
    )  # fmt: skip
    assert stale.status_code == 412  # the If-Match header reached the operation
    updated = await edge.ehr(
        "PUT", f"/Appointment/{rid}", json={**appointment(), "id": rid, "status": "arrived"},
        headers={"If-Match": created.headers["ETag"]},
    )  # fmt: skip
    assert updated.status_code == 200
    assert updated.headers["ETag"] == 'W/"2"'
    version = await edge.ehr("GET", f"/Appointment/{rid}/_history/1")
    assert version.json()["status"] == appointment()["status"]
    assert (await edge.ehr("GET", "/NotAType/x")).status_code == 404
    assert (await edge.ehr("GET", "/metadata")).status_code == 200
    assert not [path for path in solved if path.startswith("/fhir/")]

    assert (await edge.platform("/appointments")).status_code == 200
    assert solved == ["/platform/v1/appointments"]  # the other routes go through FastAPI's handler, as before


def _operation_router() -> APIRouter:
    router = APIRouter(route_class=FhirRoute)

    @router.put("/things/{rid}")
    async def put_thing(rid: str, request: Request, if_match: Annotated[str | None, Header()] = None) -> Response:
        return JSONResponse({"rid": rid, "if_match": if_match, "method": request.method})

    return router


def _refuse() -> None:
    raise HTTPException(status_code=403, detail="refused where included")


@pytest.mark.parametrize("guarded", [False, True])
async def test_a_dependency_added_where_a_route_is_included_still_runs(guarded: bool) -> None:
    app = FastAPI()
    app.include_router(_operation_router(), dependencies=[Depends(_refuse)] if guarded else [])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        answer = await client.put("/things/a-1", headers={"If-Match": 'W/"3"'})
    if guarded:
        assert answer.status_code == 403
    else:
        assert answer.json() == {"rid": "a-1", "if_match": 'W/"3"', "method": "PUT"}


@pytest.mark.parametrize("most", [256, 1])
async def test_each_base_url_answers_its_own_host_and_scheme(
    edge: Gateway, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """The base URL a Location names is remembered per scheme and Host; one request's never answers another's,
    including past the number remembered (1 here: later ones are built each time)."""
    monkeypatch.setattr(responses, "_BASES", {})
    monkeypatch.setattr(responses, "_MOST_BASES", most)
    for n, host in enumerate(("a.example", "b.example:8443", "a.example", "c.example")):
        for scheme in ("http", "https"):
            body = {**appointment(), "identifier": [{"system": "urn:oid:1.2.3.4", "value": f"base-{n}-{scheme}"}]}
            created = await edge.http.post(
                f"{scheme}://{host}/fhir/R4/Appointment", json=body, headers=edge.headers(EHR_A)
            )
            assert created.status_code == 201, created.text
            assert created.headers["Location"].startswith(f"{scheme}://{host}/fhir/R4/Appointment/")
