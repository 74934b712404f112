#!/usr/bin/env python3
"""CPU cost of auditing a read: FHIR reads through the app in-process, with and without the audit trail.

The app runs in this process over httpx's ASGI transport (no sockets, so the figure is the gateway's own work:
routing, auth, the store's read, the answer, and with audit the entry and its share of the buffered pipeline
flush). "Without" is the same app with the audit middleware taken out (no entry opened, nothing recorded).
Rounds alternate between the two and the best round of each is reported, as CPU microseconds per read
(``time.process_time``: this process only; the Redis server's CPU is not counted).

    .venv/bin/python bench/audit_bench.py [--reads 2000] [--rounds 5]

Uses REDIS_URL, else an embedded Redis in a temporary folder; keys go under a unique prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.access import AuditRecorder
from gateway.app import create_app
from gateway.embedded import EmbeddedRedis
from gateway.settings import ClientsConfig, Settings

TOKEN = "ehr-bench-" + uuid.uuid4().hex
PATIENT = {"resourceType": "Patient", "id": "bench-1", "name": [{"family": "Synthetic"}], "birthDate": "1990-01-01"}


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder)) as server:
        yield server.url


@contextlib.asynccontextmanager
async def gateway(settings: Settings, clients: ClientsConfig, audited: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clients)
    if not audited:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AuditRecorder]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench.test") as http,
    ):
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield http


async def one_round(settings: Settings, clients: ClientsConfig, audited: bool, reads: int) -> float:
    """Return CPU microseconds per read for one round (the audit buffer flushed inside the timed window)."""
    async with gateway(settings, clients, audited) as http:
        for _ in range(50):  # warm up
            await http.get("/fhir/R4/Patient/bench-1")
        started = time.process_time()
        for _ in range(reads):
            response = await http.get("/fhir/R4/Patient/bench-1")
            assert response.status_code == 200, response.text
        if audited:
            await http._transport.app.state.services.audit.flush()  # type: ignore[attr-defined]
        return (time.process_time() - started) / reads * 1e6


async def audit_alone(settings: Settings, clients: ClientsConfig, reads: int) -> tuple[float, float]:
    """Return CPU microseconds per read of a stand-in app that answers at once, bare and inside the audit
    middleware (the audit's whole cost: the request's entry opened, recorded, and its share of the flush)."""
    from types import SimpleNamespace

    from gateway.services import Services

    services = Services.build(settings, clients)
    state = SimpleNamespace(services=services)
    route = SimpleNamespace(path="/fhir/R4/{rtype}/{rid}", endpoint=None)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"etag", b'W/"1"')]}

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope.update(route=route, path_params={"rtype": "Patient", "rid": "bench-1"})
        await send(start)
        await send({"type": "http.response.body", "body": b"{}"})

    async def sent(message: Any) -> None:
        return None

    recorder = AuditRecorder(answer)
    figures = []
    try:
        for app in (answer, recorder):
            started = time.process_time()
            for i in range(reads):
                scope = {
                    "type": "http", "method": "GET", "path": "/fhir/R4/Patient/bench-1", "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {TOKEN}".encode())], "client": ("127.0.0.1", 1),
                    "app": SimpleNamespace(state=state),
                }  # fmt: skip
                await app(scope, None, sent)
                if i % 512 == 511:
                    await services.audit.flush()
            await services.audit.flush()
            figures.append((time.process_time() - started) / reads * 1e6)
        return figures[0], figures[1]
    finally:
        await services.aclose()


async def main(reads: int, rounds: int) -> None:
    with redis_url() as url:
        prefix = f"gwbench-{uuid.uuid4().hex[:8]}"
        settings = Settings(redis_url=url, key_prefix=prefix)
        clients = ClientsConfig.model_validate({"clients": [{"token": TOKEN, "tenant": "bench", "role": "ehr"}]})
        try:
            async with gateway(settings, clients, True) as http:
                assert (await http.put("/fhir/R4/Patient/bench-1", json=PATIENT)).status_code in (200, 201)
            figures: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for audited in (False, True):
                    figures[audited].append(await one_round(settings, clients, audited, reads))
            without, with_ = min(figures[False]), min(figures[True])
            print(
                f"reads per round: {reads}, rounds: {rounds} (best round shown; all: "
                f"without {[round(f) for f in figures[False]]}, with {[round(f) for f in figures[True]]})"
            )
            print(f"CPU per read without audit: {without:.0f} us")
            print(f"CPU per read with audit:    {with_:.0f} us ({(with_ - without) / without * 100:+.1f}%)")
            bare, recorded = map(
                min, zip(*[await audit_alone(settings, clients, reads * 5) for _ in range(rounds)], strict=True)
            )
            alone = recorded - bare
            print(
                f"the audit's own cost:       {alone:.1f} us per read ({alone / without * 100:.1f}% of a read;"
                f" stand-in app {bare:.1f} us bare, {recorded:.1f} us audited)"
            )
        finally:
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.unlink(*keys)
            client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000, help="reads per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind, alternating (default 5)")
    options = parser.parse_args()
    asyncio.run(main(options.reads, options.rounds))
