"""Where the worker's CPU goes, phase by phase, for the benchmark's Appointments and Patients.

Fills a tenant's inbound stream the way the API does (the benchmark's transaction Bundles through
``gateway.fhir.bundle.process``: stored versions, history, and one job per mapped resource) on an embedded Redis
(AOF, ``appendfsync always``) or ``REDIS_URL`` (keys under a unique prefix, deleted at the end), then drains it
with the worker's own code in this process, one round after another as ``fhir-gateway worker``'s job loop does
(``Worker.drain_round``: due retries promoted, one read of up to ``--batch`` jobs, one batch per tenant). The
first half of the jobs is drained as the worker runs, for its CPU per job, jobs per CPU second and jobs/s; the
rest with each phase timed, for the CPU each phase costs per job (the timers add their own cost, a CPU-clock
read on each side of every map and classify, which the difference between the two totals shows):

- *read jobs*: XREADGROUP of a batch of jobs (and the promotion of due retries before it);
- *read batch*: what the batch's resources find: their records, the stored versions the jobs name, and the
  records that read them (one round trip per tenant);
- *map*: each version mapped to its platform record (``Family.to_platform``);
- *classify*: each record compared with the one before it (``Family.classify``);
- *plan*: the rest of deciding the batch: records, indexes and events serialised into the atomic plan;
- *dependents*: the records that read a changed resource queued to be mapped again (a round trip only for
  what the batch read did not cover: canonical URLs);
- *commit*: the plan sent to Redis and applied by the commit script (this process's side only: Redis's own CPU
  is printed apart);
- *other*: the rest of the round: grouping, settling, metrics, logging, the event loop.

HTTP, the worker's companions (webhooks, write-backs) and its housekeeping are not in these figures:
``gateway_bench.py`` measures the whole worker process. ``--profile FILE`` also writes cProfile stats of the
first half (its figures are then slower).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as sync_redis
from gateway_bench import delete_keys, make_bundle

from gateway.embedded import EmbeddedRedis
from gateway.fhir import bundle as bundles
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.web.body import parse_json
from gateway.work.worker import Worker
from mappers.registry import MAPPED

PHASES = ("read jobs", "read batch", "map", "classify", "plan", "dependents", "commit")
TENANT = "bench"


class _Clock:
    """Accumulates CPU seconds per phase; a phase timed inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self._inner = 0.0  # CPU of the phases timed inside the one running

    def _charge(self, phase: str, start: float, inner_before: float) -> None:
        spent = time.process_time() - start
        nested = self._inner - inner_before
        self.cpu[phase] += spent - nested
        self._inner = inner_before + spent

    def timed_async(self, phase: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start, before = time.process_time(), self._inner
            try:
                return await fn(*args, **kwargs)
            finally:
                self._charge(phase, start, before)

        return wrapper

    def timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start, before = time.process_time(), self._inner
            try:
                return fn(*args, **kwargs)
            finally:
                self._charge(phase, start, before)

        return wrapper


async def _fill(services: Services, size: int, count: int) -> int:
    """Accept ``count`` Bundles of ``size`` entries as the API does; return the jobs they queued."""
    run = f"w{uuid.uuid4().hex[:6]}"
    for seq in range(count):
        body, _ = make_bundle(run, size, seq)
        value = parse_json(body, max_depth=64, max_string=1_048_576)
        await bundles.process(services.edge, TENANT, value, "http://bench/fhir/R4", bundles.Prefer(), size=len(body))
    return int(await services.redis.xlen(services.keys.inbound(TENANT)))


def _instrument(worker: Worker, clock: _Clock) -> Callable[[], None]:
    """Time the worker's phases; return what undoes it."""
    records: Any = worker._records
    queue: Any = worker.queue
    committer: Any = worker._committer
    originals = dict(MAPPED)
    for rtype, family in originals.items():
        MAPPED[rtype] = dataclasses.replace(
            family,
            to_platform=clock.timed("map", family.to_platform),
            classify=clock.timed("classify", family.classify),
        )
    records.plan = clock.timed_async("plan", records.plan)
    records._read = clock.timed_async("read batch", records._read)
    records._refreshes = clock.timed_async("dependents", records._refreshes)
    queue.read = clock.timed_async("read jobs", queue.read)
    queue.promote_due = clock.timed_async("read jobs", queue.promote_due)
    committer.commit = clock.timed_async("commit", committer.commit)

    def undo() -> None:
        MAPPED.update(originals)
        for obj, names in ((records, ("plan", "_read", "_refreshes")),
                           (queue, ("read", "promote_due")), (committer, ("commit",))):  # fmt: skip
            for name in names:
                delattr(obj, name)

    return undo


def _redis_cpu(url: str) -> float:
    info = sync_redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _drain(
    worker: Worker, url: str, limit: int | None, profiler: cProfile.Profile | None = None
) -> dict[str, float]:
    """Drain about ``limit`` jobs (all when None); return jobs done, CPU seconds, wall seconds, Redis CPU seconds."""
    processed_before = worker.processed
    redis_before = _redis_cpu(url)
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    while limit is None or worker.processed - processed_before < limit:
        if not await worker.drain_round(worker.queue, [TENANT], block_ms=10):
            break
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "done": worker.processed - processed_before,
        "cpu": cpu,
        "wall": wall,
        "redis": _redis_cpu(url) - redis_before,
    }


async def _run(url: str, prefix: str, size: int, count: int, batch: int, profile: Path | None) -> dict[str, float]:
    settings = Settings(redis_url=url, key_prefix=prefix, worker_concurrency=batch, worker_metrics_port=0)
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {TENANT: {"vendor": "generic"}}})
    services = Services.build(settings, clients)
    profiler = cProfile.Profile() if profile else None
    try:
        jobs = await _fill(services, size, count)
        worker = services.worker("worker-phases")
        worker._tenants = [TENANT]
        await worker.queue.ensure_group(TENANT)
        for _ in range(2):  # warm-up rounds, not counted
            await worker.drain_round(worker.queue, [TENANT])
        # The first half as the worker runs (its CPU per job and rate), the rest with every phase timed: the
        # timers' own cost (a CPU-clock read on each side of each map and classify) shows as the difference.
        plain = await _drain(worker, url, (jobs - worker.processed) // 2, profiler)
        clock = _Clock()
        undo = _instrument(worker, clock)
        try:
            timed = await _drain(worker, url, None)
        finally:
            undo()
        done = timed["done"]
        if not done or not plain["done"]:
            raise SystemExit("too few jobs to measure: raise --bundles or --size (the warm-up takes two batches)")
        dead = int(await services.redis.xlen(services.keys.dead_letters(TENANT)))
        left = int(await services.redis.xlen(services.keys.inbound(TENANT)))
        row = {phase: clock.cpu[phase] * 1e6 / done for phase in PHASES}
        row["other"] = timed["cpu"] * 1e6 / done - sum(row.values())
        row["total"] = timed["cpu"] * 1e6 / done
        row["plain"] = plain["cpu"] * 1e6 / plain["done"]
        row["redis"] = plain["redis"] * 1e6 / plain["done"]
        row["per_s"] = plain["done"] / plain["wall"]
        row["cpu_per_s"] = plain["done"] / plain["cpu"]
        row["jobs"], row["plain_jobs"], row["timed"], row["dead"], row["left"] = jobs, plain["done"], done, dead, left
        return row
    finally:
        await services.aclose()
        if profiler and profile:
            profiler.dump_stats(str(profile))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100, help="entries per Bundle, one of them a Patient (100)")
    parser.add_argument("--bundles", type=int, default=200, help="Bundles accepted before the drain (200)")
    parser.add_argument("--batch", type=int, default=Settings.model_fields["worker_concurrency"].default,
                        help="jobs per read and batch (the gateway's GATEWAY_WORKER_CONCURRENCY default)")  # fmt: skip
    parser.add_argument("--embedded", action="store_true", help="use an embedded Redis even when REDIS_URL is set")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the first half to this file")
    args = parser.parse_args(argv)
    prefix = f"gwworker-{uuid.uuid4().hex[:8]}"
    url = None if args.embedded else os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if url else EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            url = url or (embedded.url if embedded else "")
            row = asyncio.run(_run(url, prefix, args.size, args.bundles, args.batch, args.profile))
        finally:
            if embedded:
                embedded.stop()
            elif url:
                delete_keys(url, prefix)
    where = "embedded (appendfsync always)" if embedded else "REDIS_URL"
    print(f"Redis: {where}; {row['jobs']:,.0f} jobs queued from {args.bundles} {args.size}-entry Bundles, "
          f"batches of {args.batch}; dead-lettered {row['dead']:.0f}, left {row['left']:.0f}")  # fmt: skip
    print()
    print(f"As the worker runs ({row['plain_jobs']:,.0f} jobs): {row['plain']:.1f} us of worker CPU per job, "
          f"{row['cpu_per_s']:,.0f} jobs per CPU second, {row['per_s']:,.0f} jobs/s, "
          f"Redis {row['redis']:.1f} us per job")  # fmt: skip
    print()
    print(f"Phase by phase, us of worker CPU per job ({row['timed']:,.0f} jobs, with the timers' own cost):")
    print()
    print("| " + " | ".join(PHASES) + " | other | total |")
    print("|" + "--:|" * (len(PHASES) + 2))
    cells = " | ".join(f"{row[p]:.1f}" for p in (*PHASES, "other", "total"))
    print(f"| {cells} |")
    return 0 if row["dead"] == 0 and row["left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
