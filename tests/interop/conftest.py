"""A real ``fhir-gateway run`` process for the client libraries to talk to over HTTP.

One process per test module and Redis backend (the embedded server, and ``REDIS_URL``'s when it is set), with its
own key prefix, a clients file with one ``ehr`` token, and the worker and poller it always runs. It is stopped,
with everything it started, and its keys deleted, when the module is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.support import free_port, wait_until

BIN = Path(sys.executable).parent / "fhir-gateway"
EHR_TOKEN = "interop-ehr-token-0123456789abcdef"


@dataclass(frozen=True)
class Server:
    """The gateway under test: its FHIR base URL and the bearer token of an ``ehr`` client."""

    base: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Start ``fhir-gateway run`` on a free port and yield it once it answers."""
    if not BIN.exists():
        pytest.fail(f"the console script is not installed at {BIN}")
    folder = tmp_path_factory.mktemp("interop")
    clients = folder / "clients.json"
    config = {"clients": [{"token": EHR_TOKEN, "tenant": "interop", "role": "ehr"}], "tenants": {}}
    clients.write_text(json.dumps(config), encoding="utf-8")
    prefix = f"gwinterop-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("GATEWAY_")}
    env.update(REDIS_URL=redis_url, GATEWAY_KEY_PREFIX=prefix, GATEWAY_CLIENTS_FILE=str(clients),
               GATEWAY_WORKER_BLOCK_MS="100", PYTHONUNBUFFERED="1")  # fmt: skip
    log = (folder / "run.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "run", "--port", str(port), "--data-dir", str(folder / "data")],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"fhir-gateway run exited: {(folder / 'run.log').read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, "fhir-gateway run to serve", every=0.1)
        yield Server(f"{base}/fhir/R4", EHR_TOKEN)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
        redis = Redis.from_url(redis_url)
        keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            redis.unlink(*keys[i : i + 1000])
        redis.close()


@pytest.fixture
def tag() -> str:
    """Return a value no other test uses, to keep each test's resources apart on the shared server."""
    return uuid.uuid4().hex[:10]
