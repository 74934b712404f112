"""Logs carry ids and resource types only: never a payload, a name or a search value."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import respx
from opentelemetry import trace

from gateway import logs
from gateway.logs import JsonFormatter
from gateway.metrics import REGISTRY
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, PLATFORM_A, Gateway, running
from tests.gateway.fixtures import appointment
from tests.support import until

SECRET = "Zebediah-Quibble-555-0199"


async def test_no_payload_or_search_value_reaches_the_log(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patient = {"resourceType": "Patient", "id": "p-log", "name": [{"family": SECRET}],
               "identifier": [{"system": "urn:mrn", "value": SECRET}]}  # fmt: skip
    await gateway.ehr("PUT", "/Patient/p-log", json=patient)
    await gateway.ehr("PUT", "/Appointment/a-log", json=appointment(id="a-log", description=SECRET))
    await gateway.ehr("PUT", "/Appointment/a-bad", json=appointment(id="a-bad", status=SECRET))
    await gateway.ehr("GET", f"/Patient?identifier=urn:mrn|{SECRET}")
    await gateway.ehr("POST", "/Appointment", content=f'{{"resourceType": "Appointment", "x": "{SECRET}"'.encode())
    await gateway.ehr("GET", f"/{SECRET}/1")
    await gateway.drain()
    # httpx's own records are this test's client talking, not the gateway.
    lines = [JsonFormatter().format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(json.loads(line).get("route") == "/fhir/R4/{rtype}/{rid}" for line in lines)
    assert not [line for line in lines if SECRET in line]


# ---- tracing: no request's path or query reaches an OpenTelemetry exporter ----------------------------------


class _RecordingTracer(trace.NoOpTracer):
    """A tracer that keeps the attributes of every span started, as an exporter would send them."""

    def __init__(self) -> None:
        self.attributes: list[dict[str, Any]] = []

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        self.attributes.append(dict(kwargs.get("attributes") or {}))
        return super().start_span(*args, **kwargs)


class _RecordingProvider(trace.TracerProvider):
    """A configured global tracer provider, as an OpenTelemetry SDK or an operator's auto-instrumentation sets."""

    def __init__(self) -> None:
        self.tracer = _RecordingTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self.tracer


async def test_a_configured_tracer_provider_gets_no_search_value(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI traces every request when the process has a global OpenTelemetry provider (an SDK set one, or
    ``OTEL_PYTHON_TRACER_PROVIDER`` names one), with the path and the query string as span attributes: a search's
    values (a name, an identifier) would reach the collector. The gateway's telemetry is its metrics and ids-only
    logs; no span is started for a request."""
    provider = _RecordingProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    assert trace.get_tracer_provider() is provider
    await gateway.ehr("GET", f"/Patient?identifier=urn:mrn|{SECRET}&name={SECRET}")
    await gateway.ehr("PUT", "/Patient/p-trace", json={"resourceType": "Patient", "id": "p-trace"})
    assert not [a for a in provider.tracer.attributes if SECRET in repr(a)]
    assert provider.tracer.attributes == []


# ---- outbound requests: no URL of a webhook, write-back or poll reaches the log -----------------------------

CANARY = "canary-" + uuid.uuid4().hex[:12]  # a patient's id, as vendors put them in paths and query strings
EHR_BASE = "https://ehr.test/fhir/R4"
HOOK = f"https://hooks.example.test/{CANARY}/hook?patient={CANARY}"
EHR_BLOCK = {
    "base_url": EHR_BASE, "auth": {"type": "bearer", "token": "static-ehr-token-0123456789"},
    "poll": {"types": ["Appointment"], "since": "2026-01-01T00:00:00Z", "page_size": 2}, "rate_limit_per_second": 1000,
}  # fmt: skip


@pytest.fixture
def production_logging() -> Iterator[Callable[[], str]]:
    """Configure logging as the processes do, at DEBUG; yield a function returning what was written."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    flags = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    switches = {name: getattr(logging, name) for name in flags}
    logs.configure("DEBUG")
    written = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)  # in place of stderr
    yield written.getvalue
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    for name, value in switches.items():
        setattr(logging, name, value)


async def test_no_outbound_url_reaches_the_log(settings: Settings, production_logging: Callable[[], str]) -> None:
    clients = ClientsConfig.model_validate(
        {**CLIENTS, "tenants": {"clinic-a": {"vendor": "generic", "ehr": EHR_BLOCK}}}
    )
    stored = appointment(id=CANARY, meta={"versionId": "7", "lastUpdated": "2026-11-01T10:00:00Z"})
    polled = appointment(id=f"{CANARY}-2", meta={"versionId": "1", "lastUpdated": "2026-02-01T10:00:00Z"})
    next_page = f"{EHR_BASE}/Appointment?patient={CANARY}&page=2"
    page_one = {"resourceType": "Bundle", "type": "searchset",
                "link": [{"relation": "next", "url": next_page}], "entry": []}  # fmt: skip
    page_two = {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"fullUrl": f"{EHR_BASE}/Appointment/{polled['id']}", "resource": polled}]}  # fmt: skip
    with respx.mock(assert_all_called=True) as outside:
        hook = outside.post(HOOK).respond(204)
        cancel = outside.put(f"{EHR_BASE}/Appointment/{CANARY}").respond(200, json={**stored, "status": "cancelled"})
        outside.get(next_page).respond(200, json=page_two)
        outside.get(f"{EHR_BASE}/Appointment").respond(200, json=page_one)
        async with running(settings, clients, with_worker=True) as gw:
            platform = {"Authorization": f"Bearer {PLATFORM_A}"}
            sub = {"url": HOOK, "events": ["appointment.*"], "secret": "s" * 32}
            assert (await gw.http.post("/platform/v1/subscriptions", json=sub, headers=platform)).status_code == 201
            assert (await gw.ehr("PUT", f"/Appointment/{CANARY}", json=stored)).status_code == 201
            cancelled = await gw.http.post(f"/platform/v1/appointments/{CANARY}/cancel", json={}, headers=platform)
            assert cancelled.status_code == 202, cancelled.text
            report = await gw.services.poller().poll_once("clinic-a")
            assert report is not None and report.sweeps[0].accepted == 1
            await until(lambda: hook.called and cancel.called, "the webhook and the write-back to be delivered")
            await gw.drain()
    written = production_logging()
    routes = {json.loads(line).get("route") for line in written.splitlines()}
    assert "/platform/v1/appointments/{appointment_id}/cancel" in routes  # the log was captured
    assert [line for line in written.splitlines() if CANARY in line] == []


# ---- the access log ------------------------------------------------------------------------------------------


async def test_every_answer_is_logged_once_with_its_route_status_and_request_id(
    gateway: Gateway, production_logging: Callable[[], str]
) -> None:
    given = await gateway.ehr("GET", "/Appointment/a-none", headers={"X-Request-Id": "trace-0001"})
    fresh = await gateway.ehr("GET", "/Appointment/a-none")
    unknown = await gateway.ehr("GET", "/NoSuchType/x/y/z")
    assert given.status_code == fresh.status_code == 404
    assert given.headers["x-request-id"] == "trace-0001"
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != "trace-0001"
    lines = [x for x in map(json.loads, production_logging().splitlines()) if x["msg"] == "request"]
    answered = [(x["route"], x["status"], x.get("type"), x.get("request_id")) for x in lines]
    assert answered[:2] == [
        ("/fhir/R4/{rtype}/{rid}", 404, "Appointment", "trace-0001"),
        ("/fhir/R4/{rtype}/{rid}", 404, "Appointment", fresh.headers["x-request-id"]),
    ]
    assert answered[2][1:3] == (unknown.status_code, None) and len(answered) == 3


def test_a_log_line_is_one_json_object_with_a_utc_millisecond_stamp() -> None:
    record = logging.LogRecord("gateway.app", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update(status=200, big=2**70, route="/fhir/R4")  # an integer past 64 bits: written all the same
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["msg"], entry["status"], entry["big"], entry["route"]) == ("request", 200, 2**70, "/fhir/R4")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


async def test_each_answer_is_counted_in_the_requests_metric(gateway: Gateway) -> None:
    labels = {"method": "GET", "route": "/fhir/R4/{rtype}/{rid}", "status": "404"}
    before = REGISTRY.get_sample_value("gateway_http_requests_total", labels) or 0.0
    for _ in range(3):
        assert (await gateway.ehr("GET", "/Appointment/a-none")).status_code == 404
    assert REGISTRY.get_sample_value("gateway_http_requests_total", labels) == before + 3
