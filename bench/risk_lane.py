#!/usr/bin/env python3
"""How long a risk flag takes to reach the platform while a backlog of ordinary work waits (issue #14).

Real processes on loopback: Redis (REDIS_URL, or an embedded one), ``fhir-gateway api`` and one
``fhir-gateway worker``. First the benchmark queues ``--backlog`` ordinary jobs (Appointments written straight
through the gateway's store, exactly as the edge writes them: versions, indexes and jobs in one atomic commit),
with no worker running. Then it starts the worker and, while the worker works through that backlog, PUTs
``--flags`` PHQ-9 QuestionnaireResponses whose item 9 is answered above 0, one every ``--every`` seconds, over
HTTP. For each it times, from the 2xx of the PUT:

- **feed**: until the ``risk.flagged`` event is on ``/platform/v1/changes`` (a long-poll reader filtered on
  ``risk.*``);
- **webhook**: until a local receiver subscribed to ``risk.*`` has it.

It prints the percentiles and the ordinary backlog left when the last flag arrived, stops everything it started
and deletes its keys. Figures are printed, never asserted; bench/README.md has the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.embedded import EmbeddedRedis
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Update

TENANT = "bench"
EHR = "ehr-risk-" + uuid.uuid4().hex
PLATFORM = "platform-risk-" + uuid.uuid4().hex
BIN = Path(sys.executable).parent / "fhir-gateway"
LOINC = "http://loinc.org"
PHQ9 = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
ANSWERS = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _appointment(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": f"bk{i}", "status": "booked", "description": "Follow-up",
        "start": "2026-12-10T14:00:00Z", "end": "2026-12-10T14:50:00Z",
        "participant": [{"actor": {"reference": f"Patient/p{i % 500}"}, "status": "accepted"}],
    }  # fmt: skip


def _questionnaire() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire", "id": "phq9", "url": "https://bench.example/Questionnaire/phq9",
        "status": "active", "code": [{"system": LOINC, "code": "44249-1"}],
        "item": [{"linkId": f"q{n}", "type": "choice", "code": [{"system": LOINC, "code": c}]}
                 for n, c in enumerate(PHQ9, start=1)],
    }  # fmt: skip


def _response(rid: str) -> dict[str, Any]:
    scores = [0] * 8 + [2]
    return {
        "resourceType": "QuestionnaireResponse", "id": rid, "status": "completed",
        "questionnaire": "https://bench.example/Questionnaire/phq9", "subject": {"reference": "Patient/p1"},
        "authored": "2026-12-01T10:00:00Z",
        "item": [{"linkId": f"q{n}", "answer": [{"valueCoding": {"system": LOINC, "code": ANSWERS[s]}}]}
                 for n, s in enumerate(scores, start=1)],
    }  # fmt: skip


class Receiver:
    """A webhook receiver on loopback that notes when each risk.flagged event arrives."""

    def __init__(self, expected: int, loop: asyncio.AbstractEventLoop) -> None:
        self.arrived: dict[str, float] = {}
        self.all_arrived = asyncio.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = json.loads(body)
                if event.get("type") == "risk.flagged":
                    outer.arrived.setdefault(event["record_id"], time.monotonic())
                    if len(outer.arrived) >= expected:
                        loop.call_soon_threadsafe(outer.all_arrived.set)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/risk"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _seed(settings: Settings, clients: ClientsConfig, backlog: int) -> None:
    services = Services.build(settings, clients)
    try:
        for start in range(0, backlog, 1000):
            ops = [Update("Appointment", f"bk{i}", _appointment(i)) for i in range(start, min(start + 1000, backlog))]
            await services.store.apply(TENANT, ops)
    finally:
        await services.aclose()


async def _start(name: str, args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    log = Path(env["GATEWAY_DATA_DIR"]) / f"{name}.log"
    # The worker is this file's own (`--as-worker`): the one process that must deliver to a plain-http receiver.
    command = [sys.executable, __file__, "--as-worker"] if args == ["worker"] else [str(BIN), *args]
    return await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb")
    )


def _as_worker() -> int:
    """Run `fhir-gateway worker`'s loop in development mode, set here in code: the receiver is plain http on
    loopback, which production refuses, and GATEWAY_DEVELOPMENT does not make `fhir-gateway worker` a development
    process."""
    import signal

    async def work() -> None:
        services = Services.build(Settings(development=True))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await services.worker().run(stop)
        finally:
            await services.aclose()

    asyncio.run(work())
    return 0


async def _run(args: argparse.Namespace, env: dict[str, str], settings: Settings, clients: ClientsConfig) -> int:
    api_port = _free_port()
    api = await _start("api", ["api", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"], env)
    worker: asyncio.subprocess.Process | None = None
    base = f"http://127.0.0.1:{api_port}"
    receiver = Receiver(args.flags, asyncio.get_running_loop())
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            ehr = {"Authorization": f"Bearer {EHR}", "Content-Type": "application/fhir+json"}
            platform = {"Authorization": f"Bearer {PLATFORM}"}
            # Stored directly: the production API refuses a plain-http receiver.
            services = Services.build(settings, clients)
            try:
                await services.subscriptions.create(
                    TENANT, url=receiver.url, events=["risk.*"], secret="risk-bench-secret-0123456789",
                    owner="bench", scopes=frozenset({"sensitive"}),
                )  # fmt: skip
            finally:
                await services.aclose()
            assert (await http.put("/fhir/R4/Questionnaire/phq9", json=_questionnaire(), headers=ehr)).is_success
            started = time.monotonic()
            await _seed(settings, clients, args.backlog)
            print(f"queued {args.backlog} ordinary jobs in {time.monotonic() - started:.1f} s", flush=True)

            head = (await http.get("/platform/v1/changes", headers=platform)).json()["next_cursor"]
            seen: dict[str, float] = {}

            async def read_feed() -> None:
                cursor = head
                while len(seen) < args.flags:
                    page = (await http.get("/platform/v1/changes", headers=platform, params={
                        "cursor": cursor, "types": "risk.flagged", "wait": 5, "limit": 100})).json()  # fmt: skip
                    for event in page["events"]:
                        seen.setdefault(event["record_id"], time.monotonic())
                    cursor = page["next_cursor"]

            reader = asyncio.create_task(read_feed())
            worker = await _start("worker", ["worker"], env)
            sent: dict[str, float] = {}
            for n in range(args.flags):
                rid = f"risk{n}"
                answer = await http.put(f"/fhir/R4/QuestionnaireResponse/{rid}", json=_response(rid), headers=ehr)
                assert answer.is_success, answer.text
                sent[rid] = time.monotonic()
                await asyncio.sleep(args.every)
            await asyncio.wait_for(reader, timeout=120)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver.all_arrived.wait(), timeout=120)
            left = redis.Redis.from_url(settings.redis_url or "").xlen(f"{settings.key_prefix}:{{{TENANT}}}:inbound")
        feed = [seen[r] - sent[r] for r in sent]
        hook = [receiver.arrived[r] - sent[r] for r in sent if r in receiver.arrived]
        print(f"ordinary jobs still queued when the last flag was sent: {left}")
        for name, values in (("feed", feed), ("webhook", hook)):
            print(f"{name:8} n={len(values):3}  p50 {statistics.median(values) * 1000:7.1f} ms  "
                  f"p99 {_percentile(values, 0.99) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms")  # fmt: skip
        return 0 if len(hook) == len(feed) == args.flags else 1
    finally:
        for proc in (worker, api):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=20)
        receiver.server.shutdown()


def main() -> int:
    if sys.argv[1:] == ["--as-worker"]:
        return _as_worker()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="ordinary jobs queued first (default 100000)")
    parser.add_argument("--flags", type=int, default=50, help="risk-bearing responses sent (default 50)")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between them (default 0.2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="risk-bench-") as tmp:
        embedded = None
        url = os.environ.get("REDIS_URL")
        if not url:
            embedded = EmbeddedRedis(Path(tmp) / "redis").start()
            url = embedded.url
        prefix = f"gwbench-{uuid.uuid4().hex[:8]}"
        platform = {"token": PLATFORM, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]}
        data = {"clients": [{"token": EHR, "tenant": TENANT, "role": "ehr"}, platform]}
        (Path(tmp) / "clients.json").write_text(json.dumps(data))
        env = {**os.environ, "REDIS_URL": url, "GATEWAY_KEY_PREFIX": prefix, "GATEWAY_DATA_DIR": tmp,
               "GATEWAY_CLIENTS_FILE": str(Path(tmp) / "clients.json"), "GATEWAY_WORKER_METRICS_PORT": "0",
               "GATEWAY_MAX_BACKLOG": str(args.backlog * 2), "GATEWAY_OUTBOUND_ALLOW": "127.0.0.0/8"}  # fmt: skip
        settings = Settings(redis_url=url, key_prefix=prefix, max_backlog=args.backlog * 2)
        clients = ClientsConfig.model_validate(data)
        try:
            return asyncio.run(_run(args, env, settings, clients))
        finally:
            client = redis.Redis.from_url(url)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.unlink(key)
            if embedded is not None:
                embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
