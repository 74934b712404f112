#!/usr/bin/env python3
"""Redis memory per stored resource version, per normalized record and per feed event (issue #13).

Starts its own embedded Redis (so nothing else counts), stores ``--resources`` Appointments with ``--versions``
versions each through the gateway's store (as the edge writes them: body, current state, indexes, job), then
drains the jobs with the gateway's worker (records, record indexes, feed events) and reads ``used_memory``
around each phase, plus ``MEMORY USAGE`` of each kind of key. Prints bytes per unit and the estimate for a
million appointments; bench/README.md and docs/deploy.md have the figures. ``--store-format 2`` measures the data
as a gateway writes it once an operator has set that format (``fhir-gateway store-format``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from gateway.embedded import EmbeddedRedis
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Update
from gateway.store.format import FORMATS, set_format

TENANT = "mem"


def _appointment(i: int, version: int) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": f"a{i}",
        "identifier": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8", "value": f"{100000 + i}"}],
        "status": "booked" if version < 2 else "cancelled",
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "310022001"}], "text": "Therapy"}],
        "description": f"Therapy session, visit {version + 1}",
        "start": f"2026-12-{10 + version:02d}T14:00:00Z",
        "end": f"2026-12-{10 + version:02d}T14:50:00Z",
        "participant": [
            {"actor": {"reference": f"Patient/p{i}", "display": "Patient"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/dr{i % 40}"}, "status": "accepted"},
        ],
    }


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _usage_by_kind(client: redis.Redis, prefix: str) -> dict[str, tuple[int, int]]:
    """Return (keys, bytes) per kind of key (the part after the tenant: cur, hist, idx, rec, rix, feed, ...)."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key.decode()
        kind = name.split("}:", 1)[1].split(":", 1)[0] if "}:" in name else name
        kinds[kind][0] += 1
        kinds[kind][1] += int(client.memory_usage(key, samples=0) or 0)
    return {k: (v[0], v[1]) for k, v in sorted(kinds.items())}


async def _run(args: argparse.Namespace, url: str) -> None:
    prefix = f"mem-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=url, key_prefix=prefix, worker_concurrency=256)
    clients = ClientsConfig.model_validate({"tenants": {TENANT: {"vendor": "generic"}}})
    client = redis.Redis.from_url(url)
    services = Services.build(settings, clients)
    n, versions = args.resources, args.versions
    try:
        await set_format(services.redis, services.keys.store_format, args.store_format)
        print(f"store format {args.store_format}: {FORMATS[args.store_format]}")
        base = _used(client)
        for version in range(versions):
            for start in range(0, n, 500):
                ops = [
                    Update("Appointment", f"a{i}", _appointment(i, version)) for i in range(start, min(start + 500, n))
                ]
                await services.store.apply(TENANT, ops)
        stored = _used(client)
        jobs = int(client.xlen(services.keys.inbound(TENANT)))
        store_kinds = _usage_by_kind(client, prefix)
        worker = services.worker(name="memory-bench")
        while batch := await worker.queue.read([TENANT], worker.name, 256, 10):
            await worker.handle(*batch)
        drained = _used(client)
        kinds = _usage_by_kind(client, prefix)
        events = int(client.xlen(services.keys.feed(TENANT)))
    finally:
        await services.aclose()
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.unlink(key)
    version_bytes = (stored - base) / (n * versions)
    print(f"{n} appointments x {versions} versions: {jobs} jobs queued, then {events} feed events")
    print(f"used_memory: store phase +{(stored - base) / 1e6:.1f} MB, worker phase +{(drained - stored) / 1e6:.1f} MB")
    print("MEMORY USAGE by kind of key, after the store phase (jobs still queued) and after the worker:")
    for kind in sorted(set(store_kinds) | set(kinds)):
        before, after = store_kinds.get(kind, (0, 0)), kinds.get(kind, (0, 0))
        print(f"  {kind:10} {before[0]:7} keys {before[1] / 1e6:8.2f} MB -> {after[0]:7} keys {after[1] / 1e6:8.2f} MB")
    hist = kinds.get("hist", (0, 0))[1] / (n * versions)
    cur_idx = sum(kinds.get(k, (0, 0))[1] for k in ("cur", "idx", "vers")) / n
    records = sum(kinds.get(k, (0, 0))[1] for k in ("rec", "rix")) / n
    feed = kinds.get("feed", (0, 0))[1] / max(events, 1)
    print(f"per stored version (its body in the history hash): {hist:.0f} B")
    print(f"per resource (current state and FHIR search indexes): {cur_idx:.0f} B")
    print(f"per normalized record (record and its indexes): {records:.0f} B")
    print(f"per feed event: {feed:.0f} B")
    print(f"per version, all of the store phase (used_memory): {version_bytes:.0f} B")
    million = 1_000_000
    total = million * (versions * hist + cur_idx + records) + million * versions * feed
    print(f"1M appointments x {versions} versions, with one event per version kept on the feed: {total / 1e9:.2f} GB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=5000, help="appointments (default 5000)")
    parser.add_argument("--versions", type=int, default=3, help="versions of each (default 3)")
    parser.add_argument(
        "--store-format", type=int, choices=sorted(FORMATS), default=1, help="the store format to write (default 1)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp, EmbeddedRedis(Path(tmp)) as server:
        asyncio.run(_run(args, server.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
