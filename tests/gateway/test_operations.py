"""Operations endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import re

from gateway.settings import ClientsConfig, Settings
from tests.conftest import Gateway, running
from tests.gateway.fixtures import appointment


def _sample(text: str, name: str, **labels: str) -> float:
    """Return the value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_move_when_work_flows(gateway: Gateway) -> None:
    before = (await gateway.http.get("/metrics")).text
    await gateway.ehr("PUT", "/Appointment/m1", json=appointment(id="m1"))
    await gateway.ehr("PUT", "/Appointment/m2", json=appointment(id="m2", status="nonsense"))
    await gateway.drain()
    after = (await gateway.http.get("/metrics")).text
    assert after.startswith("# HELP") or "gateway_" in after

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("gateway_resources_total", type="Appointment", outcome="created") == 1
    assert grew("gateway_validation_failures_total", type="Appointment") == 1
    assert grew("gateway_jobs_total", type="Appointment", outcome="applied") == 1
    assert grew("gateway_change_events_total", type="appointment.created") == 1
    assert grew("gateway_http_requests_total", method="PUT", route="/fhir/R4/{rtype}/{rid}", status="201") == 1
    assert _sample(after, "gateway_queue_backlog", tenant="clinic-a") == 0
    assert re.search(r'gateway_job_seconds_count\{type="Appointment"\} [1-9]', after)


async def test_readiness_follows_redis(settings: Settings, clients: ClientsConfig) -> None:
    async with running(settings, clients, with_worker=False) as gw:
        assert (await gw.http.get("/readyz")).status_code == 200
        assert (await gw.http.get("/healthz")).status_code == 200
    gone = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with running(gone, clients, with_worker=False) as gw:
        response = await gw.http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["resourceType"] == "OperationOutcome"
        assert (await gw.http.get("/healthz")).status_code == 200
