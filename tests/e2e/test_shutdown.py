"""SIGTERM during a burst of pushes loses nothing that was acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    EHR,
    PLATFORM,
    Proc,
    Queue,
    all_events,
    appointment,
    created_counts,
    fhir_headers,
    gateway_env,
    wait_http,
    wait_until,
    write_clients,
)
from tests.support import free_port

# What is checked is the processes' shutdown, not the Redis under them: run once, on the embedded server.
pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]
BURST = 400


def test_sigterm_during_a_burst_loses_nothing(
    redis_url: str,
    key_prefix: str,
    queue: Queue,
    launch: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    clients = write_clients(tmp_path / "clients.json")
    env = gateway_env(redis_url, key_prefix, clients, GATEWAY_WORKER_METRICS_PORT="0")
    port = free_port()
    api = launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api")
    worker = launch("worker", env=env, name="worker")
    base = wait_http(api, port)

    acknowledged: list[str] = []
    lock = threading.Lock()

    def push(i: int) -> None:
        rid = f"burst-{i}"
        try:
            response = httpx.put(
                f"{base}/fhir/R4/Appointment/{rid}", json=appointment(rid), headers=fhir_headers(EHR), timeout=10
            )
        except httpx.TransportError:
            return  # not acknowledged: the client would retry it
        if response.status_code in (200, 201):
            with lock:
                acknowledged.append(rid)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(push, i) for i in range(BURST)]
        wait_until(lambda: len(acknowledged) >= BURST // 4, "a quarter of the burst to be acknowledged")
        assert api.terminate() == 0, api.describe()
        assert worker.terminate() == 0, worker.describe()
        for future in futures:
            future.result()
    print(f"acknowledged {len(acknowledged)} of {BURST} before SIGTERM; backlog left {queue.backlog()}")

    port = free_port()
    api = launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api-again")
    launch("worker", env=env, name="worker-again")
    base = wait_http(api, port)
    wait_until(lambda: queue.backlog() == 0 and queue.pending() == 0, "the queue to drain after the restart")
    with httpx.Client(timeout=10) as http:
        for rid in acknowledged:
            stored = http.get(f"{base}/fhir/R4/Appointment/{rid}", headers=fhir_headers(EHR))
            assert stored.status_code == 200, f"{rid} was acknowledged and is lost"
        counts = created_counts(all_events(http, base, PLATFORM))
    assert all(counts[rid] == 1 for rid in acknowledged), "an acknowledged push has no event or two"
    assert all(n == 1 for n in counts.values())
