"""Helpers and fixtures for the end-to-end tests: real ``fhir-gateway`` processes, real Redis, real HTTP.

Every process is started in its own session so that teardown can stop it and anything it spawned.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis import Redis

from tests import support
from tests.conftest import corpus_dir

BIN = Path(sys.executable).parent / "fhir-gateway"
TENANT = "clinic-a"
# Random, as production processes (api, worker) refuse tokens under 128 bits of estimated entropy.
EHR = "e2e-ehr-" + secrets.token_urlsafe(32)
PLATFORM = "e2e-platform-" + secrets.token_urlsafe(32)
GROUP = "workers"
PATIENT_URN = "urn:uuid:7c1e3b0e-8f0a-4c55-9b7e-2f6d7a8b9c01"
PRACTITIONER_URN = "urn:uuid:0f8e6c2a-1b3d-4e5f-8a9b-c0d1e2f3a4b5"
APPOINTMENT_URN = "urn:uuid:5d1c7c0c-4b5f-4a8e-9d6e-1a2b3c4d5e6f"
TIMEOUT = 20.0


# ---------------------------------------------------------------- helpers


def base_env(**settings: str) -> dict[str, str]:
    """The test's environment without any gateway setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def gateway_env(redis_url: str, prefix: str, clients_file: Path | None = None, **extra: str) -> dict[str, str]:
    settings = {
        "REDIS_URL": redis_url,
        "GATEWAY_KEY_PREFIX": prefix,
        "GATEWAY_CLAIM_IDLE_SECONDS": "1",
        "GATEWAY_RETRY_BASE_SECONDS": "0.05",
        "GATEWAY_RETRY_MAX_SECONDS": "0.2",
        "GATEWAY_WORKER_BLOCK_MS": "100",
        # Past this wait a request is 503 (tests/gateway/test_redis_outage.py covers that). These tests are about
        # other things, and on a loaded CI machine an fsync of the embedded server's AOF (appendfsync always) has
        # stalled a feed read past the 2 s default.
        "GATEWAY_REDIS_TIMEOUT_SECONDS": "15",
        **extra,
    }
    if clients_file is not None:
        settings["GATEWAY_CLIENTS_FILE"] = str(clients_file)
    return base_env(**settings)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one short ``fhir-gateway`` command to completion."""
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


class Proc:
    """A long-running ``fhir-gateway`` process in its own session, its output in files."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path, name: str) -> None:
        self.name = name
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(BIN), *args], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid = self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        return f"{self.name} (rc={self.popen.poll()}):\n{self.stdout()[-2000:]}\n{self.stderr()[-4000:]}"

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """Send SIGTERM to the process (not its group) and return its exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would."""
        self.popen.kill()
        self.popen.wait(timeout=TIMEOUT)

    def group_alive(self) -> bool:
        """Whether anything of the process's session is still running (e.g. a redis-server it started)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def cleanup(self) -> None:
        """Stop the process and everything it started."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``fhir-gateway`` processes; all of them, and what they spawned, are stopped at teardown."""
    if not BIN.exists():
        pytest.fail(f"the console script is not installed at {BIN}")
    procs: list[Proc] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()

    def start(*args: str, env: dict[str, str], name: str) -> Proc:
        proc = Proc(list(args), env, logdir, f"{name}-{len(procs)}")
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.cleanup()
        # Shown by pytest with a failed test's report ("Captured stdout teardown"), so CI's output says what the
        # gateway logged (ids and types only) when an answer was not the one expected.
        print(proc.describe())


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    return support.wait_until(condition, what, limit=timeout, every=every)


def wait_http(proc: Proc, port: int) -> str:
    """Wait until the process answers /healthz; return its base URL."""
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            pytest.fail(f"the process exited before serving: {proc.describe()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, f"{proc.name} to serve on port {port}", every=0.1)
    return base


def write_clients(path: Path) -> Path:
    config = {
        "clients": [
            {"token": EHR, "tenant": TENANT, "role": "ehr"},
            {"token": PLATFORM, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]},
        ],
        "tenants": {},
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def fhir_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def all_events(http: httpx.Client, base: str, token: str) -> list[dict[str, Any]]:
    """Read the whole change feed through the platform API, page by page."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        response = http.get(f"{base}/platform/v1/changes", params=params, headers=fhir_headers(token))
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events.extend(page["events"])
        cursor = page["next_cursor"]


def created_counts(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["record_id"] for e in events if e["type"] == "appointment.created")


def appointment(rid: str) -> dict[str, Any]:
    """A synthetic booked Appointment (no real patient data)."""
    return {
        "resourceType": "Appointment",
        "id": rid,
        "status": "booked",
        "description": "Follow-up visit",
        "start": "2026-12-10T09:00:00-05:00",
        "end": "2026-12-10T09:30:00-05:00",
        "participant": [
            {"actor": {"reference": f"Patient/p-{rid}"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"},
        ],
    }


def put_bundle(rids: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": appointment(rid), "request": {"method": "PUT", "url": f"Appointment/{rid}"}} for rid in rids
        ],
    }


def hl7_transaction() -> dict[str, Any]:
    """The HL7 example Appointment with its Patient and Practitioner, linked by urn:uuid references."""
    path = corpus_dir() / "hl7-r4-spec-examples" / "Appointment-example.json"
    appt = json.loads(path.read_text(encoding="utf-8"))
    appt["participant"][0]["actor"]["reference"] = PATIENT_URN
    appt["participant"][1]["actor"]["reference"] = PRACTITIONER_URN
    patient = {"resourceType": "Patient", "name": [{"family": "Synthetic", "given": ["Pat"]}]}
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Example", "prefix": ["Dr"]}]}
    entries = [(appt, APPOINTMENT_URN), (patient, PATIENT_URN), (practitioner, PRACTITIONER_URN)]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
            for res, urn in entries
        ],
    }


def demo_tokens(proc: Proc) -> dict[str, str]:
    """Wait for ``fhir-gateway run`` to print its demo tokens; return them by role."""

    def printed() -> dict[str, str]:
        if not proc.alive():
            pytest.fail(f"'run' exited: {proc.describe()}")
        found = dict(re.findall(r"^\s*(ehr|platform|admin)\s+token:\s*(\S+)\s*$", proc.stdout(), re.MULTILINE))
        return found if {"ehr", "platform", "admin"} <= found.keys() else {}

    tokens: dict[str, str] = wait_until(printed, "the demo tokens on stdout", every=0.1)
    return tokens


class Queue:
    """What Redis says about a tenant's queue, read the way an operator would with redis-cli."""

    def __init__(self, redis_url: str, prefix: str, tenant: str = TENANT) -> None:
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.prefix = prefix
        self.inbound = f"{prefix}:{{{tenant}}}:inbound"
        self.retry = f"{prefix}:{{{tenant}}}:retry"
        self.dlq = f"{prefix}:{{{tenant}}}:dlq"
        self.feed = f"{prefix}:{{{tenant}}}:feed"
        self.tenant = tenant

    def backlog(self) -> int:
        return int(self.redis.xlen(self.inbound)) + int(self.redis.zcard(self.retry))

    def pending(self) -> int:
        try:
            return int(self.redis.xpending(self.inbound, GROUP)["pending"])
        except redis.ResponseError:  # no stream, or no worker has created the group yet
            return 0

    def pending_of_pid(self, pid: int) -> list[str]:
        """The ids pending for the consumer of process ``pid`` (consumer names are host-pid-random)."""
        try:
            summary = self.redis.xpending(self.inbound, GROUP)
        except redis.ResponseError:  # no worker has created the group yet
            return []
        names = [c["name"] for c in summary.get("consumers") or [] if f"-{pid}-" in c["name"]]
        held: list[str] = []
        for name in names:
            rows = self.redis.xpending_range(self.inbound, GROUP, "-", "+", 100_000, consumername=name)
            held += [row["message_id"] for row in rows]
        return held

    def poison(self, rid: str) -> str:
        """Queue a job naming a version that was never stored: every attempt fails with NotFound."""
        self.redis.sadd(f"{self.prefix}:tenants", self.tenant)
        job = {"type": "Appointment", "id": rid, "vid": 1, "op": "upsert", "attempt": 0}
        return str(self.redis.xadd(self.inbound, job))

    def dead_letter_ids(self) -> dict[str, str]:
        """Dead-letter stream id by the resource id of its job."""
        return {fields["id"]: entry_id for entry_id, fields in self.redis.xrange(self.dlq)}

    def delete_all(self) -> None:
        """Delete every key of the prefix, many per command (the embedded server fsyncs every write)."""
        batch: list[str] = []
        for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch.clear()
        if batch:
            self.redis.delete(*batch)

    def close(self) -> None:
        self.redis.close()


@pytest.fixture
def queue(redis_url: str, key_prefix: str) -> Iterator[Queue]:
    """The test's queue in Redis; its keys are deleted afterwards (after the processes, started later, stop)."""
    q = Queue(redis_url, key_prefix)
    yield q
    q.delete_all()
    q.close()


def find_key(obj: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in a JSON value."""
    found: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found += find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += find_key(v, key)
    return found


def scalars(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set().union(*(scalars(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(scalars(v) for v in obj)) if obj else set()
    return {str(obj)}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
