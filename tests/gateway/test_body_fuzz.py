"""No body gives a 5xx: arbitrary JSON-ish bytes sent to every route that reads a body, found from the app's own
routes (a route added later is covered without touching this file)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, PLATFORM_A, running
from tests.gateway.fixtures import appointment

# The Redis given makes no difference here (see tests/conftest.py): run once.
pytestmark = pytest.mark.embedded_only

EHR_LENIENT = "ehr-token-lenient-tenant-0123456789"
EHR_BLOCK = {"base_url": "https://ehr.example.test/fhir", "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
CLIENTS = {
    "clients": [
        {"token": EHR_A, "tenant": "clinic-a", "role": "ehr"},
        {"token": PLATFORM_A, "tenant": "clinic-a", "role": "platform", "scopes": ["sensitive"]},
        {"token": EHR_LENIENT, "tenant": "clinic-l", "role": "ehr"},
    ],
    "tenants": {
        "clinic-a": {"vendor": "generic", "ehr": EHR_BLOCK},
        "clinic-l": {"vendor": "generic", "validation": "lenient"},
    },
}
BODY_METHODS = {"POST", "PUT", "PATCH"}
# A value for each path parameter; ids the seeded resources have where a route reads a stored one.
PATH_VALUES = {
    "rtype": "Appointment", "rid": "appt-1", "vid": "1", "appointment_id": "appt-1", "plan_id": "plan-1",
    "index": "0", "sid": "sub-1", "flag_id": "flag-1", "action": "pause", "route": "appointments",
}  # fmt: skip
MEDIA = ["application/fhir+json", "application/json", "application/json-patch+json",
         "application/x-www-form-urlencoded", "text/plain"]  # fmt: skip


class Raw:
    """A JSON token written as is: what a JSON encoder would never write."""

    def __init__(self, text: str) -> None:
        self.text = text


RAW_TOKENS = [
    "9" * 5000, "-" + "1" * 4400, "1e999", "-1e999", "NaN", "Infinity", '"\\ud800"', '"a\\udfffb"',
    '"\\ud83d\\ude00"', "1.0e-400", "18446744073709551616", "-0", '"\\u0000"', "0.1", "2147483648",
]  # fmt: skip
KEYS = ["resourceType", "id", "meta", "versionId", "security", "type", "entry", "request", "method", "url", "resource",
        "fullUrl", "status", "start", "end", "participant", "actor", "reference", "name", "family", "given",
        "patient", "sender", "body", "thread_id", "survey", "answers", "link_id", "value", "value_type", "events",
        "secret", "op", "path", "from", "reason", "parameter", "valueString", "extension", "identifier", "system",
        "\\ud800", "practitioners", "requested_period", "text", "item", "linkId", "answer"]  # fmt: skip
TYPES = [
    "Patient",
    "Appointment",
    "Bundle",
    "Parameters",
    "Communication",
    "CarePlan",
    "QuestionnaireResponse",
    "Basic",
]

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(TYPES), st.sampled_from(["transaction", "batch", "collection", "booked", "add", "replace",
                                             "POST", "PUT", "Patient/p1", "urn:uuid:1", "2026-12-10T09:00:00Z"]),
    st.sampled_from(RAW_TOKENS).map(Raw),
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def render(value: Any) -> str:
    """Write ``value`` as JSON text, its Raw tokens verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_key(k)}:{render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


def _key(key: str) -> str:
    return f'"{key}"' if key == "\\ud800" else json.dumps(key)


resources = st.builds(
    lambda rtype, extra: {"resourceType": rtype, **extra},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6),
)


def _transaction(resource: dict[str, Any]) -> str:
    entry = {"request": {"method": "POST", "url": "Appointment"}, "resource": resource}
    return render({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})


bodies = st.one_of(
    values.map(render),
    resources.map(render),
    resources.map(_transaction),
    st.builds(lambda cut, r: render(r)[:cut], st.integers(0, 60), resources),  # cut short
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
).map(lambda text: text.encode("utf-8", "surrogatepass"))


def body_routes() -> Iterator[tuple[str, str]]:
    """Yield (method, path) of every route of the app that takes a body (console routes too)."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1"), ClientsConfig())
    yield from _walk(app.routes, "")


def _walk(routes: Any, prefix: str) -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods & BODY_METHODS):
                yield method, prefix + route.path
        elif (router := getattr(route, "original_router", None)) is not None:  # an included router (FastAPI 0.16x)
            yield from _walk(router.routes, prefix + route.include_context.prefix)


ROUTES = sorted(set(body_routes()))


def test_the_routes_found_include_every_kind_of_body() -> None:
    paths = {path for _, path in ROUTES}
    for expected in ("/fhir/R4", "/fhir/R4/{rtype}", "/fhir/R4/{rtype}/{rid}", "/fhir/R4/{rtype}/_search",
                     "/fhir/R4/{rtype}/$validate", "/platform/v1/messages", "/platform/v1/subscriptions",
                     "/platform/v1/appointments/{appointment_id}/cancel"):  # fmt: skip
        assert expected in paths, expected
    assert ("PATCH", "/fhir/R4/{rtype}/{rid}") in ROUTES


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x1"), path)


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_no_body_gives_a_5xx(method: str, path: str, settings: Settings) -> None:
    clients = ClientsConfig.model_validate(CLIENTS)
    loop = asyncio.new_event_loop()
    context = running(settings, clients, with_worker=False)
    try:
        gw = loop.run_until_complete(context.__aenter__())
        loop.run_until_complete(_seed(gw.http))

        @settings_for_fuzz
        @given(body=bodies, media=st.sampled_from(MEDIA), token=st.sampled_from([EHR_A, PLATFORM_A, EHR_LENIENT]))
        def check(body: bytes, media: str, token: str) -> None:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": media}
            response = loop.run_until_complete(gw.http.request(method, _url(path), content=body, headers=headers))
            assert response.status_code < 500, (response.status_code, response.text[:500])

        check()
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


settings_for_fuzz = hypothesis_settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


async def _seed(http: httpx.AsyncClient) -> None:
    """Store what the write-back routes read, so that they get past 404."""
    headers = {"Authorization": f"Bearer {EHR_A}", "Content-Type": "application/fhir+json"}
    stored = {**appointment(), "id": "appt-1"}
    assert (await http.put("/fhir/R4/Appointment/appt-1", json=stored, headers=headers)).status_code < 300
    plan = {"resourceType": "CarePlan", "id": "plan-1", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/pat-1"},
            "activity": [{"detail": {"kind": "Appointment", "status": "scheduled"}}]}  # fmt: skip
    assert (await http.put("/fhir/R4/CarePlan/plan-1", json=plan, headers=headers)).status_code < 300
