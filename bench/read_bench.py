#!/usr/bin/env python3
"""CPU per FHIR read and per 1,000-event feed page, in-process (issue #13: reads return the stored bytes).

Starts its own embedded Redis, stores ``--resources`` Appointments through the gateway's store and drains them
with its worker (one ``appointment.created`` event each), then measures the process's CPU time
(``time.process_time``; Redis runs in its own process and is not counted):

- ``GET /fhir/R4/Appointment/{id}`` through the app (httpx's ASGI transport: the client's CPU is counted too), and
  the read alone (the store's read and the answer's body, no HTTP);
- a searchset page of 100 Appointments through the app;
- ``GET /platform/v1/changes?limit=1000`` through the app, and the page alone (``Feed.changes`` and the body).

Runs against whichever ``gateway`` is importable, so the same script measures an older commit
(``PYTHONPATH=<its tree>``); bench/README.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from gateway import encoding
from gateway.app import create_app
from gateway.embedded import EmbeddedRedis
from gateway.fhir import answers
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Update
from gateway.web.responses import JSONBody

TENANT = "bench"
EHR = "ehr-token-read-bench-0123456789"
PLATFORM = "platform-token-read-bench-0123456789"


def _appointment(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": f"a{i}",
        "identifier": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8", "value": f"{100000 + i}"}],
        "status": "booked",
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "310022001"}], "text": "Therapy"}],
        "description": "Therapy session",
        "start": "2026-12-10T14:00:00Z",
        "end": "2026-12-10T14:50:00Z",
        "participant": [
            {"actor": {"reference": f"Patient/p{i}", "display": "Patient"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/dr{i % 40}"}, "status": "accepted"},
        ],
    }


async def _cpu(label: str, unit: str, rounds: int, repeat: int, step: Callable[[int], Awaitable[Any]]) -> None:
    """Print the median over ``repeat`` runs of the CPU time of ``rounds`` steps, per step."""
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for i in range(rounds):
            await step(i)
        runs.append((time.process_time() - start) / rounds)
    median = statistics.median(runs)
    shown = f"{median * 1e6:8.1f} us" if median < 1e-3 else f"{median * 1e3:8.2f} ms"
    print(f"  {label:44} {shown} CPU per {unit} (median of {repeat}, min {min(runs) * 1e6:.1f} us)")


def _cpu_of(label: str, rounds: int, repeat: int, step: Callable[[], Any]) -> None:
    """Print the median over ``repeat`` runs of the CPU time of ``rounds`` calls of ``step``, per call."""
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            step()
        runs.append((time.process_time() - start) / rounds)
    print(f"  {label:44} {statistics.median(runs) * 1e6:8.2f} us CPU per read (median of {repeat})")


async def _run(args: argparse.Namespace, url: str) -> None:
    settings = Settings(redis_url=url, key_prefix=f"rb-{uuid.uuid4().hex[:8]}", worker_concurrency=256)
    clients = ClientsConfig.model_validate({
        "clients": [
            {"token": EHR, "tenant": TENANT, "role": "ehr"},
            {"token": PLATFORM, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]},
        ],
        "tenants": {TENANT: {"vendor": "generic"}},
    })  # fmt: skip
    services = Services.build(settings, clients)
    app = create_app(settings, clients, services=services)
    n = args.resources
    for start in range(0, n, 500):
        await services.store.apply(
            TENANT, [Update("Appointment", f"a{i}", _appointment(i)) for i in range(start, min(start + 500, n))]
        )
    worker = services.worker(name="read-bench")
    while batch := await worker.queue.read([TENANT], worker.name, 256, 10):
        await worker.handle(*batch)
    events = int(await services.redis.xlen(services.keys.feed(TENANT)))
    print(f"{n} appointments stored, {events} feed events; gateway from {Path(answers.__file__).parents[2]}")

    store, feed = services.store, services.feed
    spliced = hasattr(store, "read_json")

    async def read_alone(i: int) -> bytes:
        rid = f"a{i % n}"
        if spliced:
            return bytes(answers.stored_response(await store.read_json(TENANT, "Appointment", rid)).body)
        return bytes(answers.read_response(await store.read(TENANT, "Appointment", rid)).body)

    async def page_alone(_: int) -> bytes:
        page = await feed.changes(TENANT, None, 1000, 0)
        if spliced:
            return page.json()
        return bytes(JSONBody({"events": page.events, "next_cursor": page.next_cursor}).body)

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench.test") as http,
    ):
        ehr = {"Authorization": f"Bearer {EHR}"}
        platform = {"Authorization": f"Bearer {PLATFORM}"}

        async def read_http(i: int) -> None:
            answer = await http.get(f"/fhir/R4/Appointment/a{i % n}", headers=ehr)
            assert answer.status_code == 200

        async def page_http(_: int) -> None:
            answer = await http.get("/platform/v1/changes?limit=1000", headers=platform)
            assert answer.status_code == 200 and answer.content.endswith(b"}")

        print("reads:" if spliced else "reads (parse and write again):")
        raw = await store.redis.hget(store.keys.history(TENANT, "Appointment", "a0"), "1")
        _cpu_of("stored body parsed and written again", args.reads * 10, args.repeat,
                lambda: encoding.dumps(encoding.loads(raw)))  # fmt: skip
        if spliced:
            from gateway.store import compact

            _cpu_of("stored body sent as it is (its head read)", args.reads * 10, args.repeat,
                    lambda: compact.head(raw))  # fmt: skip
        await _cpu("read alone (store read + body)", "read", args.reads, args.repeat, read_alone)
        await _cpu("GET /fhir/R4/Appointment/{id} through the app", "read", args.reads, args.repeat, read_http)

        async def search_http(_: int) -> None:
            answer = await http.get("/fhir/R4/Appointment?_count=100", headers=ehr)
            assert answer.status_code == 200 and answer.content.endswith(b"}")

        await _cpu("GET /fhir/R4/Appointment?_count=100 via the app", "page", args.pages * 5, args.repeat, search_http)
        print("feed pages:")
        await _cpu("1,000-event page alone (Feed.changes + body)", "page", args.pages, args.repeat, page_alone)
        await _cpu("GET /platform/v1/changes?limit=1000 via the app", "page", args.pages, args.repeat, page_http)
    await services.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1000, help="appointments, one event each (default 1000)")
    parser.add_argument("--reads", type=int, default=2000, help="reads per run (default 2000)")
    parser.add_argument("--pages", type=int, default=20, help="feed pages per run (default 20)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the median is printed (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="read-bench-") as tmp, EmbeddedRedis(Path(tmp)) as server:
        asyncio.run(_run(args, server.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
