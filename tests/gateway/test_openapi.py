"""The OpenAPI document at /openapi.json: it validates, documents every route with examples, and schemathesis,
run in-process against the app with real Redis for a bounded number of cases per operation, finds no 5xx."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, EHR_A, PLATFORM_A, Gateway, running
from tests.gateway import fixtures

# The Redis given makes no difference here (see tests/conftest.py): run once.
pytestmark = pytest.mark.embedded_only

METHODS = ("get", "put", "post", "delete", "patch")
EXAMPLES_PER_OPERATION = 24  # drawn from schema-conforming, non-conforming and the documented examples


def _document() -> dict[str, Any]:
    """Return the OpenAPI document of an app that is never started (building it needs no Redis)."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1"), ClientsConfig.model_validate(CLIENTS))
    return app.openapi()


DOCUMENT = _document()
OPERATIONS = [
    f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item if method in METHODS
]


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def _has_example(holder: dict[str, Any]) -> bool:
    schema = holder.get("schema") or {}
    return any(key in holder for key in ("example", "examples")) or any(k in schema for k in ("example", "examples"))


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    resolved: dict[str, Any] = node
    return resolved


def _token(path: str) -> str | None:
    if path.startswith("/fhir/R4"):
        return EHR_A
    if path.startswith("/platform/v1"):
        return PLATFORM_A
    return None


# -- the document -------------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3() -> None:
    assert DOCUMENT["openapi"].startswith("3.")
    validate(DOCUMENT)  # raises OpenAPIValidationError with the path of the fault


def test_every_route_has_a_summary_and_documents_its_answers() -> None:
    missing = [f"{m} {p}" for m, p, op in _operations(DOCUMENT) if not (op.get("summary") or "").strip()]
    assert missing == []
    for method, path, operation in _operations(DOCUMENT):
        statuses = set(operation["responses"])
        assert any(s.startswith("2") for s in statuses), f"{method} {path} documents no success"
        assert "HTTPValidationError" not in str(operation["responses"]), (
            f"{method} {path}: errors are OperationOutcomes"
        )


def test_every_request_body_and_parameter_has_an_example() -> None:
    missing: list[str] = []
    for method, path, operation in _operations(DOCUMENT):
        for parameter in operation.get("parameters", []):
            if not _has_example(parameter):
                missing.append(f"{method} {path}: parameter {parameter['in']} {parameter['name']}")
        body = operation.get("requestBody")
        if body is None:
            continue
        for media_type, content in body["content"].items():
            schema = _resolve(DOCUMENT, content.get("schema") or {})
            if not (_has_example(content) or "examples" in schema or "example" in schema):
                missing.append(f"{method} {path}: request body {media_type}")
    assert missing == []


def test_the_api_declares_who_may_call_it() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert all(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    for method, path, operation in _operations(DOCUMENT):
        if _token(path) is not None:
            assert operation.get("security"), f"{method} {path} does not declare its bearer token"


def test_error_answers_are_documented_as_operation_outcomes() -> None:
    for method, path, operation in _operations(DOCUMENT):
        if _token(path) is None:
            continue
        assert "401" in operation["responses"], f"{method} {path}"
        unauthorized = operation["responses"]["401"]["content"]
        schema = next(iter(unauthorized.values()))["schema"]
        assert schema == {"$ref": "#/components/schemas/OperationOutcome"}, f"{method} {path}"


# -- schemathesis ---------------------------------------------------------------------------------------------


# clinic-a has an EHR connector (never reached: no worker runs), so write-backs get past the capability check.
EHR_BLOCK = {"base_url": "https://ehr.example.test/fhir", "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
# What the documented examples name (Patient/pat-1, Appointment/appt-1, CarePlan/plan-1, ...), so they reach data.
SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "pat-1", "name": [{"family": "Rivera", "given": ["Alex"]}]},
    {"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Okafor", "given": ["Dana"]}]},
    {**fixtures.appointment(), "id": "appt-1"},
    {"resourceType": "CarePlan", "id": "plan-1", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/pat-1"}, "title": "Weekly therapy",
     "activity": [{"detail": {"status": "scheduled", "description": "Attend session"}}]},
    {"resourceType": "Communication", "id": "comm-1", "status": "completed",
     "subject": {"reference": "Patient/pat-1"}, "sender": {"reference": "Practitioner/prac-1"},
     "recipient": [{"reference": "Patient/pat-1"}], "sent": "2026-12-01T10:00:00Z",
     "payload": [{"contentString": "See you Thursday"}]},
]  # fmt: skip


@pytest.fixture
def api(settings: Settings) -> Iterator[OpenApiSchema]:
    """Yield the app's schema loaded through the app itself, with its lifespan (real Redis) running and data in."""
    config = ClientsConfig.model_validate(
        {**CLIENTS, "tenants": {"clinic-a": {**CLIENTS["tenants"]["clinic-a"], "ehr": EHR_BLOCK}}}
    )
    # A long poll is cut short: the feed's long-poll is the same code whatever the wait.
    app = create_app(settings.model_copy(update={"feed_max_wait_seconds": 0.02}), config)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:
            headers = {"Authorization": f"Bearer {EHR_A}", "Content-Type": "application/fhir+json"}
            for resource in SEED:
                answer = client.put(f"/fhir/R4/{resource['resourceType']}/{resource['id']}", json=resource,
                                    headers=headers)  # fmt: skip
                assert answer.status_code in (200, 201), answer.text
        yield schema
    finally:
        asgi.shutdown_lifespans()


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_gets_a_server_error(api: OpenApiSchema, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = api[path][method]
    token = _token(path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        *api.get_strategies_from_examples(operation),
    )
    sent: list[int] = []

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def exercise(case: schemathesis.Case) -> None:
        # The right token always: what a request without one gets is tested elsewhere; past it is the code at risk.
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"} | headers
        response = case.call()
        sent.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    exercise()
    assert sent, f"{label}: no request was sent"


# -- what schemathesis found, pinned ----------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/appointments", {"cursor": _b64("r1|nan|appt-1")}),  # Redis refuses a NaN score bound
        ("/changes", {"cursor": _b64("f1:18446744073709551615-18446744073709551615")}),  # nothing after the last id
        ("/changes", {"cursor": _b64("f1:18446744073709551616-0")}),  # past 64 bits
    ],
)
async def test_a_cursor_redis_cannot_take_is_a_bad_request(gateway: Gateway, path: str, params: dict[str, str]) -> None:
    answer = await gateway.platform(path, params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == ["cursor"]


async def test_a_long_poll_outlasting_the_redis_socket_timeout_answers(
    settings: Settings, clients: ClientsConfig
) -> None:
    # Redis's client gives up on a reply after its socket timeout; one XREAD blocking for the whole wait failed.
    url = settings.redis_url or ""
    short = settings.model_copy(
        update={"redis_url": f"{url}{'&' if '?' in url else '?'}socket_timeout=1", "feed_max_wait_seconds": 2.5}
    )
    async with running(short, clients, with_worker=False) as gateway:
        answer = await gateway.platform("/changes", params={"wait": "2.5", "types": "nothing.*"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == []


@pytest.mark.parametrize("value", ["ge9999-12-31T23:59:59-23:59", "le0001-01-01T00:00:00+14:00", "9999-12", "9999"])
async def test_a_last_updated_out_of_the_date_range_is_a_bad_request(gateway: Gateway, value: str) -> None:
    # gateway/search.py's _date_range raised OverflowError (ValueError for a bare year 9999) past its try: a 500.
    answer = await gateway.ehr("GET", "/Appointment", params={"_lastUpdated": value})
    assert answer.status_code == 400, answer.text
