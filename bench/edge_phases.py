"""Where the edge's CPU goes, phase by phase, for the benchmark's transaction Bundles.

Runs the gateway's own code in this process, one Bundle after another, against an embedded Redis (AOF,
``appendfsync always``) or ``REDIS_URL`` (keys under a unique prefix, deleted at the end), and prints the CPU
each phase of accepting a Bundle costs per resource:

- *parse*: the body's bytes to JSON values (``gateway.web.body.parse_json``, the strict parser the API uses);
- *validate*: the Bundle and every entry checked (``gateway.fhir.entries.parse_entries``);
- *decide*: the store reads what the writes touch and builds the atomic plan (references rewritten, digests,
  search indexes, versions, audit entries), without the commit;
- *commit*: the plan sent to Redis and applied by the commit script (this process's side only: Redis's own CPU
  is printed apart);
- *answer*: the transaction-response Bundle built and serialised.

With a Redis that keeps an append-only file (the embedded one), it also prints how many bytes each accepted
resource added to it (``INFO persistence``, around the timed Bundles; "-" when a rewrite ran in between, or
without an AOF).

HTTP (uvicorn, Starlette, FastAPI) is not in these figures: ``gateway_bench.py`` measures the whole path.
``--store-format 2`` sets the store format an operator sets with ``fhir-gateway store-format`` (packed index
entries) before the run; a checkout from before it writes format 1 whatever the key says.
``--profile FILE`` also writes cProfile stats of the timed loop (the figures are then slower). With
``PYTHONPATH=<an older checkout>`` it measures that checkout's code (figures before a change).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis as sync_redis
from gateway_bench import delete_keys, make_bundle

from gateway.embedded import EmbeddedRedis
from gateway.fhir import bundle as bundles
from gateway.store import Keyspace, Store, audit
from gateway.store.connection import connect
from gateway.web.body import parse_json
from gateway.web.responses import FhirResponse

try:
    from gateway.heap import settle
except ImportError:  # a checkout from before the heap was settled (PYTHONPATH=<older tree>, for before figures)

    def settle() -> None:
        pass


PHASES = ("parse", "validate", "decide", "commit", "answer")


class _Clock:
    """Accumulates CPU seconds per phase."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(PHASES, 0.0)

    def timed(self, phase: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.cpu[phase] += time.process_time() - start

        return wrapper


async def _run(
    url: str, prefix: str, sizes: list[int], count: int, profile: Path | None, store_format: int
) -> dict[int, dict[str, float]]:
    sync_redis.Redis.from_url(url).set(f"{prefix}:store-format", store_format)  # Keyspace.store_format
    client = connect(url, cluster=False, timeout=5.0)
    store = Store(client, Keyspace(prefix), max_backlog=10_000_000, dedupe_seconds=300, retries=5)
    figures: dict[int, dict[str, float]] = {}
    profiler = cProfile.Profile() if profile else None
    try:
        for size in sizes:
            bodies = [make_bundle(f"p{uuid.uuid4().hex[:6]}", size, seq)[0] for seq in range(count + 2)]
            clock = _Clock()
            store._decide = clock.timed("decide", store._decide)  # type: ignore[method-assign]
            store._committer.commit = clock.timed("commit", store._committer.commit)  # type: ignore[method-assign]
            for warm in bodies[:2]:
                await _accept(store, warm, clock)
            settle()  # as the API does before it serves
            clock.cpu = dict.fromkeys(PHASES, 0.0)
            info = sync_redis.Redis.from_url(url).info("cpu")
            redis_before = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            aof_before = _aof(url)
            total_before, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for body in bodies[2:]:
                await _accept(store, body, clock)
            if profiler:
                profiler.disable()
            total, wall = time.process_time() - total_before, time.perf_counter() - wall
            info = sync_redis.Redis.from_url(url).info("cpu")
            redis_cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"]) - redis_before
            resources = size * count
            row = {phase: clock.cpu[phase] * 1e6 / resources for phase in PHASES}
            row["other"] = total * 1e6 / resources - sum(row.values())
            row["total"] = total * 1e6 / resources
            row["redis"] = redis_cpu * 1e6 / resources
            row["per_s"] = resources / wall
            aof_after = _aof(url)
            if aof_before and aof_after and aof_before[1] == aof_after[1]:  # no rewrite in between
                row["aof"] = (aof_after[0] - aof_before[0]) / resources
            figures[size] = row
            del store._decide, store._committer.commit  # back to the class's methods
    finally:
        await client.aclose()
        if profiler and profile:
            profiler.dump_stats(str(profile))
    return figures


def _aof(url: str) -> tuple[int, int] | None:
    """Return the append-only file's size and its base size (which a rewrite changes), when Redis keeps one."""
    info = sync_redis.Redis.from_url(url).info("persistence")
    if not int(info.get("aof_enabled", 0)):
        return None
    return int(info["aof_current_size"]), int(info["aof_base_size"])


async def _accept(store: Store, body: bytes, clock: _Clock) -> None:
    start = time.process_time()
    value = parse_json(body, max_depth=64, max_string=1_048_576)
    clock.cpu["parse"] += time.process_time() - start

    original = bundles.parse_entries

    def parse_entries(*args: Any, **kwargs: Any) -> Any:
        begin = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            clock.cpu["validate"] += time.process_time() - begin

    edge = _EDGE.get(id(store))
    if edge is None:
        from gateway.fhir.edge import Edge
        from gateway.settings import ClientsConfig, Settings

        clients = ClientsConfig.model_validate({"clients": []})
        edge = _EDGE[id(store)] = Edge(store, Settings(redis_url="redis://unused"), clients)
    bundles.parse_entries = parse_entries
    now_ms = int(time.time() * 1000)  # each write's audit entry goes in its plan, as in the API
    trail = audit.current.set(audit.RequestAudit("127.0.0.1", "transaction", now_ms - 86_400_000, now_ms, "bench"))
    try:
        answer = await bundles.process(edge, "bench", value, "http://bench/fhir/R4", bundles.Prefer(), size=len(body))
    finally:
        bundles.parse_entries = original
        audit.current.reset(trail)
    start = time.process_time()
    FhirResponse(answer).render(answer)
    clock.cpu["answer"] += time.process_time() - start


_EDGE: dict[int, Any] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,100", help="Bundle sizes in entries (default 20,100)")
    parser.add_argument("--bundles", type=int, default=100, help="timed Bundles per size (default 100)")
    parser.add_argument("--embedded", action="store_true", help="use an embedded Redis even when REDIS_URL is set")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the timed loops to this file")
    parser.add_argument("--store-format", type=int, default=1, help="the store format to write (default 1)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    prefix = f"gwphases-{uuid.uuid4().hex[:8]}"
    url = None if args.embedded else os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if url else EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            url = url or (embedded.url if embedded else "")
            figures = asyncio.run(_run(url, prefix, sizes, args.bundles, args.profile, args.store_format))
        finally:
            if embedded:
                embedded.stop()
            elif url:
                delete_keys(url, prefix)
    print(
        f"Redis: {'embedded (appendfsync always)' if embedded else 'REDIS_URL'}; {args.bundles} Bundles per size; "
        f"store format {args.store_format}"
    )
    print()
    print(
        "| Bundle | " + " | ".join(PHASES) + " | other | total us/resource | Redis us/resource | resources/s "
        "| AOF bytes/resource |"
    )
    print("|---|" + "--:|" * (len(PHASES) + 5))
    for size, row in figures.items():
        cells = " | ".join(f"{row[p]:.1f}" for p in (*PHASES, "other", "total", "redis"))
        aof = f"{row['aof']:,.0f}" if "aof" in row else "-"
        print(f"| {size}-entry | {cells} | {row['per_s']:,.0f} | {aof} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
