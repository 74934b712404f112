"""The API's CPU per request for single resources and small Bundles: the fixed cost that every request pays.

Calls the gateway's ASGI app in this process (``create_app``: every middleware, FastAPI's routing and the
handlers, the store and a real Redis; not uvicorn's HTTP parsing or the socket), one request after another, and
prints the CPU of this process per request for each kind:

- *put-create* / *put-update*: ``PUT /fhir/R4/Appointment/{id}``, a new id, then the same ids with a new status;
- *post-create*: ``POST /fhir/R4/Appointment``;
- *read*: ``GET /fhir/R4/Appointment/{id}``;
- *bundle-2* / *bundle-20*: transaction Bundles as ``gateway_bench.py`` sends them (a Patient, then Appointments,
  half PUT and half POST);
- *metadata*: ``GET /fhir/R4/metadata``.

Each kind runs ``--rounds`` rounds of ``--requests`` requests; the figure is the median round (the spread is
printed too: on a shared VM a round can be 30-50% slower than the next). Redis is an embedded one (AOF,
``appendfsync always``) or ``REDIS_URL`` (keys under a unique prefix, deleted at the end). With
``PYTHONPATH=<an older checkout>`` run from that checkout, it measures that checkout's code: run the two in turn,
several times, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway_bench import EHR_TOKEN, clients_file, delete_keys, make_bundle

from gateway.app import create_app
from gateway.embedded import EmbeddedRedis
from gateway.settings import Settings

KINDS = ("put-create", "put-update", "post-create", "read", "bundle-2", "bundle-20", "metadata")
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def call(app: ASGIApp, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request to ``app`` as uvicorn would hand it over; return the status and the body."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {EHR_TOKEN}".encode()),
        (b"accept", b"application/fhir+json"),
    ]
    if body:
        headers += [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    sent = False
    status = 0
    content = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            content.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(content)


def appointments(run: str, count: int) -> list[dict[str, Any]]:
    """Return ``count`` synthetic Appointments with ids of their own, referring to one Patient."""
    found: list[dict[str, Any]] = []
    seq = 0
    while len(found) < count:
        bundle = json.loads(make_bundle(run, 101, seq)[0])
        for entry in bundle["entry"][1:]:
            resource = entry["resource"]
            resource["id"] = f"rc{run}-{len(found)}"
            for participant in resource["participant"]:
                if participant["actor"]["reference"].startswith("urn:"):
                    participant["actor"]["reference"] = f"Patient/rc{run}-patient"
            found.append(resource)
        seq += 1
    return found[:count]


async def measure(app: ASGIApp, kind: str, requests: int, rounds: int) -> list[float]:
    """Return the CPU seconds per request of each round of ``kind`` (a warm-up round first, not counted)."""
    run = uuid.uuid4().hex[:8]
    rows = appointments(run, requests)
    figures: list[float] = []
    for round_ in range(rounds + 1):
        tag = f"{run}-{round_}"
        if kind in ("put-create", "post-create"):
            for i, row in enumerate(rows):
                row["id"] = f"rc{tag}-{i}"
                row["identifier"][0]["value"] = f"rc-{tag}-{i}"
        if kind == "put-update":
            for row in rows:
                row["status"] = "arrived" if round_ % 2 else "booked"
        work: list[tuple[str, str, bytes, tuple[int, ...]]] = []
        if kind in ("put-create", "put-update"):
            work = [("PUT", f"/fhir/R4/Appointment/{r['id']}", json.dumps(r).encode(), (200, 201)) for r in rows]
        elif kind == "post-create":
            new = [{k: v for k, v in r.items() if k != "id"} for r in rows]
            work = [("POST", "/fhir/R4/Appointment", json.dumps(r).encode(), (201,)) for r in new]
        elif kind == "read":
            work = [("GET", f"/fhir/R4/Appointment/{r['id']}", b"", (200,)) for r in rows]
        elif kind.startswith("bundle-"):
            size = int(kind.split("-")[1])
            work = [("POST", "/fhir/R4", make_bundle(tag, size, i)[0], (200,)) for i in range(requests)]
        elif kind == "metadata":
            work = [("GET", "/fhir/R4/metadata", b"", (200,))] * requests
        if kind in ("put-update", "read") and round_ == 0:  # what they update or read is there first
            for r in rows:
                await call(app, "PUT", f"/fhir/R4/Appointment/{r['id']}", json.dumps(r).encode())
        started = time.process_time()
        for method, path, body, expected in work:
            status, content = await call(app, method, path, body)
            if status not in expected:
                raise RuntimeError(f"{kind}: {method} answered {status}: {content[:300]!r}")
        if round_:
            figures.append((time.process_time() - started) / len(work))
    return figures


async def run(url: str, prefix: str, kinds: list[str], requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            redis_url=url, key_prefix=prefix, clients_file=clients_file(Path(folder)), max_backlog=10_000_000
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            print("| request | CPU us per request, median round | rounds: fastest - slowest |")
            print("|---|--:|--:|")
            for kind in kinds:
                figures = [f * 1e6 for f in await measure(app, kind, requests, rounds)]
                print(f"| {kind} | {statistics.median(figures):,.0f} | {min(figures):,.0f} - {max(figures):,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)} (all)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per kind (default 5)")
    parser.add_argument("--embedded", action="store_true", help="use an embedded Redis even when REDIS_URL is set")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")
    url = None if args.embedded else os.environ.get("REDIS_URL")
    prefix = f"gwcost-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if url else EmbeddedRedis(Path(tmp) / "redis").start()
        target = url or embedded.url  # type: ignore[union-attr]
        print(f"Redis: {'REDIS_URL' if url else 'embedded (appendfsync always)'}; {args.requests} requests a round")
        try:
            import uvloop  # as uvicorn runs the API

            uvloop.run(run(target, prefix, kinds, args.requests, args.rounds))
        finally:
            delete_keys(target, prefix)
            if embedded is not None:
                embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
