"""The gateway unchanged on a three-master Redis Cluster: push, drain, records, feed, webhooks and write-backs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import respx
from redis import Redis as SyncRedis
from redis.cluster import RedisCluster as SyncCluster

from gateway.settings import ClientsConfig, Settings
from tests.conftest import Gateway, running
from tests.gateway.fixtures import appointment
from tests.gateway.test_webhooks import Receiver, signature_ok
from tests.gateway.test_webhooks import receiver as receiver  # the loopback receiver fixture, shared
from tests.support import until

BASE = "https://ehr.example.test/fhir"
EHR = "ehr-token-cluster-0123456789abcdef"
PLATFORM = "platform-token-cluster-0123456789ab"
SECRET = "whsec-test-0123456789abcdef"
TENANTS = ("clinic-a", "clinic-b", "clinic-c", "clinic-d")  # enough that their hash tags land on several masters


def clients_config() -> ClientsConfig:
    clients: list[dict[str, Any]] = []
    for tenant in TENANTS:
        clients += [
            {"token": f"{EHR}-{tenant}", "tenant": tenant, "role": "ehr"},
            {"token": f"{PLATFORM}-{tenant}", "tenant": tenant, "role": "platform", "scopes": ["sensitive"]},
        ]
    ehr = {"base_url": BASE, "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
    return ClientsConfig.model_validate(
        {"clients": clients, "tenants": {t: {"vendor": "generic", "ehr": ehr} for t in TENANTS}}
    )


@pytest.fixture
def prefix(cluster_url: str) -> Iterator[str]:
    prefix = f"gwcluster-{uuid.uuid4().hex[:8]}"
    yield prefix
    cluster = SyncCluster.from_url(cluster_url)
    for node in cluster.get_primaries():
        client = SyncRedis(host=node.host, port=node.port)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for key in keys:
            client.unlink(key)
        client.close()
    cluster.close()


@pytest.fixture
def ehr() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # the webhook receiver is a real server
        yield router


@pytest.fixture
async def gw(cluster_url: str, prefix: str, ehr: respx.MockRouter) -> AsyncIterator[Gateway]:
    settings = Settings(
        redis_url=cluster_url,
        redis_cluster=True,
        key_prefix=prefix,
        development=True,  # the webhook receiver listens on plain-HTTP loopback
        claim_idle_seconds=1.0,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        worker_block_ms=50,
        webhook_retry_base_seconds=0.01,
        webhook_retry_max_seconds=0.05,
    )
    async with running(settings, clients_config(), with_worker=True) as gateway:
        yield gateway


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_whole_path_runs_on_a_cluster(gw: Gateway, ehr: respx.MockRouter, receiver: Receiver) -> None:
    hooks = {}
    for tenant in TENANTS:
        answer = await gw.http.post(
            "/platform/v1/subscriptions",
            headers=auth(f"{PLATFORM}-{tenant}"),
            json={"url": receiver.url(f"/{tenant}"), "secret": SECRET, "events": ["appointment.*"]},
        )
        assert answer.status_code == 201, answer.text
        hooks[tenant] = answer.json()["id"]

    for tenant in TENANTS:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": appointment(id=f"appt-{n}"), "request": {"method": "PUT", "url": f"Appointment/appt-{n}"}}
                for n in range(5)
            ],
        }
        pushed = await gw.ehr("POST", "", token=f"{EHR}-{tenant}", json=bundle)
        assert pushed.status_code == 200, pushed.text
        cancelled = appointment(id="appt-0", status="cancelled")
        assert (await gw.ehr("PUT", "/Appointment/appt-0", token=f"{EHR}-{tenant}", json=cancelled)).status_code == 200
        read = await gw.ehr("GET", "/Appointment/appt-0", token=f"{EHR}-{tenant}")  # one script, the tenant's slot
        assert read.status_code == 200 and read.json()["status"] == "cancelled" and read.headers["etag"] == 'W/"2"'
        assert (await gw.ehr("GET", "/Appointment/nobody", token=f"{EHR}-{tenant}")).status_code == 404
    await gw.drain()

    for tenant in TENANTS:
        token = f"{PLATFORM}-{tenant}"
        records = (await gw.http.get("/platform/v1/appointments", headers=auth(token))).json()
        assert sorted(r["id"] for r in records["records"]) == [f"appt-{n}" for n in range(5)]
        events = (await gw.http.get("/platform/v1/changes", headers=auth(token))).json()["events"]
        assert [e["type"] for e in events].count("appointment.created") == 5
        first = [e["type"] for e in events if e["record"]["id"] == "appt-0"]
        assert first == ["appointment.created", "appointment.cancelled"]

        async def delivered(t: str = tenant, n: int = len(events)) -> bool:
            return len(receiver.at(f"/{t}")) >= n

        await until(delivered, f"{tenant}'s webhook deliveries")
        got = receiver.at(f"/{tenant}")
        assert [r.event["id"] for r in got] == [e["id"] for e in events]
        assert all(signature_ok(r, SECRET) for r in got)

    created = ehr.post(f"{BASE}/Communication").respond(201, headers={"Location": f"{BASE}/Communication/c-1"})
    message = {"patient": "Patient/pat-1", "sender": "Practitioner/prac-1", "body": "See you Tuesday"}
    ids = {}
    for tenant in TENANTS:
        answer = await gw.http.post("/platform/v1/messages", headers=auth(f"{PLATFORM}-{tenant}"), json=message)
        assert answer.status_code == 202, answer.text
        ids[tenant] = answer.json()["id"]
    for tenant, wid in ids.items():

        async def settled(t: str = tenant, w: str = wid) -> dict[str, Any] | None:
            found = (await gw.http.get(f"/platform/v1/writebacks/{w}", headers=auth(f"{PLATFORM}-{t}"))).json()
            return found if found["status"] in ("delivered", "failed", "dead_lettered") else None

        assert (await until(settled, f"{tenant}'s write-back"))["status"] == "delivered"
    assert len(created.calls) == len(TENANTS)
    assert all(json.loads(c.request.content)["resourceType"] == "Communication" for c in created.calls)
