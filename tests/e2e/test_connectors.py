"""End-to-end: ``fhir-gateway run`` polls a fake EHR process and delivers a write-back to it, over real sockets.

The fake EHR (``tests/connectors/fake_ehr.py``) verifies the gateway's SMART client assertions with the keys the
gateway publishes at ``/.well-known/jwks.json``, pages its searches, and answers the write-back's first two POSTs
with 503.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.connectors.conftest import FakeEHR, new_rsa_pem, running_fake_ehr
from tests.e2e.conftest import (
    EHR,
    PLATFORM,
    TENANT,
    Proc,
    all_events,
    cli,
    fhir_headers,
    gateway_env,
    wait_http,
    wait_until,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e

CLIENT_ID = "gateway-e2e"


@pytest.fixture
def fake_ehr() -> Iterator[FakeEHR]:
    with running_fake_ehr() as server:
        yield server


def _appointment(rid: str, updated: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": rid, "meta": {"versionId": "1", "lastUpdated": updated},
        "status": "booked", "start": "2026-12-10T09:00:00-05:00", "end": "2026-12-10T09:50:00-05:00",
        "participant": [{"actor": {"reference": "Patient/p-1"}, "status": "accepted"},
                        {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"}],
    }  # fmt: skip


def _clients(folder: Path, fake: FakeEHR) -> Path:
    """Write a clients file whose tenant polls ``fake`` with a new SMART key (written beside it)."""
    key_file, path = folder / "ehr-key.pem", folder / "clients.json"
    key_file.write_bytes(new_rsa_pem())
    ehr = {
        "base_url": fake.base,
        "auth": {"type": "smart-backend", "token_url": fake.token_url, "client_id": CLIENT_ID,
                 "private_key_file": str(key_file), "alg": "RS384", "kid": "e2e-key-1",
                 "scopes": "system/Appointment.rs system/Communication.cs"},
        "poll": {"types": ["Appointment"], "interval_seconds": 1, "since": "2026-01-01T00:00:00Z", "page_size": 1},
        "rate_limit_per_second": 100, "timeout_seconds": 5, "backoff_base_seconds": 0.05, "backoff_max_seconds": 1,
    }  # fmt: skip
    config = {
        "clients": [{"token": EHR, "tenant": TENANT, "role": "ehr"},
                    {"token": PLATFORM, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]}],
        "tenants": {TENANT: {"vendor": "generic", "ehr": ehr}},
    }  # fmt: skip
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_run_polls_the_ehr_and_delivers_a_writeback_once_despite_503s(
    launch: Callable[..., Proc], fake_ehr: FakeEHR, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    clients = _clients(tmp_path, fake_ehr)
    port = free_port()
    fake_ehr.control("config", {"jwks_url": f"http://127.0.0.1:{port}/.well-known/jwks.json"})
    fake_ehr.seed(_appointment("ehr-a1", "2026-02-01T10:00:00Z"), _appointment("ehr-a2", "2026-02-01T11:00:00Z"))

    env = gateway_env(redis_url, key_prefix, clients)
    run = launch("run", "--port", str(port), "--data-dir", str(tmp_path / "data"), env=env, name="run")
    base = wait_http(run, port)

    with httpx.Client(timeout=10) as http:
        # 1. Pulled: both appointments (two pages of one) are mapped and on the change feed.
        def created() -> set[str]:
            events = all_events(http, base, PLATFORM)
            return {e["record_id"] for e in events if e["type"] == "appointment.created"} >= {"ehr-a1", "ehr-a2"}

        wait_until(created, "the polled appointments on /platform/v1/changes")
        searches = fake_ehr.requests("GET", "/fhir/Appointment")
        assert any("_page=1" in r["query"] for r in searches)  # the next link was followed
        assert fake_ehr.state()["assertions"][0]["iss"] == CLIENT_ID  # verified with the published JWKS

        # 2. A platform message written back: the EHR answers 503 twice, and still gets it exactly once.
        fake_ehr.fault("POST", "/fhir/Communication", "503", "503")
        message = {"patient": "Patient/p-1", "sender": "Patient/p-1", "body": "Can we move Thursday?",
                   "recipients": ["Practitioner/prac-1"]}  # fmt: skip
        accepted = http.post(f"{base}/platform/v1/messages", json=message, headers=fhir_headers(PLATFORM))
        assert accepted.status_code == 202, accepted.text
        wid = accepted.json()["id"]

        def delivered() -> dict[str, Any] | None:
            view = http.get(f"{base}/platform/v1/writebacks/{wid}", headers=fhir_headers(PLATFORM)).json()
            assert view["status"] in ("queued", "delivering", "delivered"), view
            return view if view["status"] == "delivered" else None

        view = wait_until(delivered, "the write-back to be delivered")
        state = fake_ehr.state()
        communications = [r for r in state["created"] if r["resourceType"] == "Communication"]
        assert len(communications) == 1
        assert view["ehr_id"] == communications[0]["id"]
        posts = fake_ehr.requests("POST", "/fhir/Communication")
        assert len(posts) == 3 and len({p["if_none_exist"] for p in posts}) == 1 and posts[0]["if_none_exist"]

    # 3. The operator's view: the cursor, and a connector that answered.
    status = json.loads(cli("connectors", "status", env=env).stdout.splitlines()[0])
    assert status["tenant"] == TENANT and status["cursors"]["Appointment"] == "2026-02-01T11:00:00Z"
    assert status["last_success"] and status["circuit"] == "closed" and status["retries"] >= 2
    assert run.terminate() == 0


@pytest.mark.embedded_only  # the Redis server makes no difference here
def test_a_poll_process_started_before_any_ehr_block_polls_the_one_a_reload_adds(
    launch: Callable[..., Proc], fake_ehr: FakeEHR, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    # A new site deploys the poller before its first EHR is configured: it must wait, not exit (a crash loop).
    clients = _clients(tmp_path, fake_ehr)
    with_ehr = json.loads(clients.read_text(encoding="utf-8"))
    without = json.loads(json.dumps(with_ehr))
    del without["tenants"][TENANT]["ehr"]
    clients.write_text(json.dumps(without), encoding="utf-8")
    fake_ehr.seed(_appointment("ehr-late", "2026-02-01T10:00:00Z"))

    env = gateway_env(redis_url, key_prefix, clients, GATEWAY_OUTBOUND_ALLOW="127.0.0.1/32")  # the fake EHR
    once = cli("poll", "--once", env=env)  # a one-off poll with nothing to poll is still refused
    assert once.returncode != 0 and "no tenant has an 'ehr' block" in once.stderr
    poller = launch("poll", env=env, name="poll")
    wait_until(lambda: "waiting for the clients file" in poller.stdout() + poller.stderr(), "the poller to wait")
    assert poller.alive(), poller.describe()
    assert not fake_ehr.requests("GET", "/fhir/Appointment")

    # The EHR block arrives (written then renamed, as a Kubernetes Secret volume does): the running poller pulls.
    clients.with_suffix(".tmp").write_text(json.dumps(with_ehr), encoding="utf-8")
    clients.with_suffix(".tmp").replace(clients)
    wait_until(lambda: fake_ehr.requests("GET", "/fhir/Appointment"), "the poller to search the EHR")

    def cursor() -> Any:
        status = json.loads(cli("connectors", "status", env=env).stdout.splitlines()[0])
        return status["cursors"].get("Appointment") == "2026-02-01T10:00:00Z"

    wait_until(cursor, "the poll cursor to move past the pulled appointment")
    assert poller.alive(), poller.describe()
    assert poller.terminate() == 0
