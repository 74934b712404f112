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

Before each drain the heap is frozen as ``fhir-gateway worker`` freezes it at start (``gateway.heap.settle``), so
the collector does not walk what the fill left alive (the Bundles kept for ``--updates``) during the drain.

``--updates`` then sends every resource again as an EHR feed mostly does, a ``PUT`` of each by its id with one
change (a quarter of the Appointments rescheduled, a quarter cancelled, a quarter with a new description, a quarter
and every Patient with only a regenerated narrative, which the platform does not see), drains those the same way
and checks the feed: one event per changed Appointment, of the type its change makes, none for the others.

HTTP, the worker's companions (webhooks, write-backs) and its housekeeping are not in these figures:
``gateway_bench.py`` measures the whole worker process. ``--profile FILE`` also writes cProfile stats of the
first half (of the updates with ``--updates``; its figures are then slower).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis as sync_redis
from gateway_bench import delete_keys, make_bundle

from gateway import heap
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


async def _fill(services: Services, size: int, count: int) -> tuple[int, list[dict[str, Any]]]:
    """Accept ``count`` Bundles of ``size`` entries as the API does; return the jobs they queued and each Bundle's
    resources as stored (the ids the gateway gave them, references to the Patient rewritten)."""
    run = f"w{uuid.uuid4().hex[:6]}"
    sent: list[dict[str, Any]] = []
    for seq in range(count):
        body, _ = make_bundle(run, size, seq)
        value = parse_json(body, max_depth=64, max_string=1_048_576)
        answer = await bundles.process(services.edge, TENANT, value, "http://bench/fhir/R4", bundles.Prefer(),
                                       size=len(body))  # fmt: skip
        sent.append(_as_stored(value, answer))
    return int(await services.redis.xlen(services.keys.inbound(TENANT))), sent


def _as_stored(bundle: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Return a transaction Bundle's resources with the ids its answer gave them and ``urn:uuid:`` references
    rewritten to them."""
    ids = {}
    for entry, done in zip(bundle["entry"], answer["entry"], strict=True):
        rtype, rid = done["response"]["location"].split("/")[:2]
        entry["resource"]["id"] = rid
        if "fullUrl" in entry:
            ids[entry["fullUrl"]] = f"{rtype}/{rid}"
    for entry in bundle["entry"]:
        for participant in entry["resource"].get("participant", []):
            actor = participant["actor"]
            actor["reference"] = ids.get(actor["reference"], actor["reference"])
    return bundle


# What each quarter of the Appointments is sent again with, and the event it must make (None: unchanged).
CHANGES = ("appointment.rescheduled", "appointment.cancelled", "appointment.updated", None)
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Regenerated</div>'}


def _changed(resource: dict[str, Any], index: int) -> tuple[dict[str, Any], str | None]:
    """Return the resource as an update sends it again, and the event the change must make (None: none)."""
    again = copy.deepcopy(resource)
    if again["resourceType"] != "Appointment":
        again["text"] = NARRATIVE
        return again, None
    change = CHANGES[index % len(CHANGES)]
    if change == "appointment.rescheduled":
        for name in ("start", "end"):
            moved = datetime.fromisoformat(again[name]) + timedelta(days=1)
            again[name] = moved.isoformat().replace("+00:00", "Z")
    elif change == "appointment.cancelled":
        again["status"] = "cancelled"
    elif change == "appointment.updated":
        again["description"] = "Synthetic benchmark visit, room changed"
    else:
        again["text"] = NARRATIVE
    return again, change


async def _fill_updates(services: Services, sent: list[dict[str, Any]]) -> tuple[int, Counter[str]]:
    """PUT every resource of ``sent`` again, changed (``_changed``); return the jobs queued and the events due."""
    due: Counter[str] = Counter()
    for bundle in sent:
        entries = []
        for index, entry in enumerate(bundle["entry"]):
            resource, event = _changed(entry["resource"], index)
            due[event or "none"] += 1
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
        value = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        await bundles.process(services.edge, TENANT, value, "http://bench/fhir/R4", bundles.Prefer())
    return int(await services.redis.xlen(services.keys.inbound(TENANT))), due


async def _events_since(services: Services, after: str) -> Counter[str]:
    """Count the tenant's feed events after entry id ``after``, by type."""
    counts: Counter[str] = Counter()
    start = f"({after}"
    while True:
        page = await services.redis.xrange(services.keys.feed(TENANT), min=start, count=1000)
        if not page:
            return counts
        counts.update(fields[b"type"].decode() for _, fields in page)
        start = f"({page[-1][0].decode()}"


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
    records.decide = clock.timed_async("plan", records.decide)
    records._read = clock.timed_async("read batch", records._read)
    records._links.refresh_readers = clock.timed_async("dependents", records._links.refresh_readers)
    queue.read = clock.timed_async("read jobs", queue.read)
    queue.promote_due = clock.timed_async("read jobs", queue.promote_due)
    committer.commit = clock.timed_async("commit", committer.commit)

    def undo() -> None:
        MAPPED.update(originals)
        for obj, names in ((records, ("decide", "_read")), (records._links, ("refresh_readers",)),
                           (queue, ("read", "promote_due")), (committer, ("commit",))):  # fmt: skip
            for name in names:
                delattr(obj, name)

    return undo


def _redis_cpu(url: str) -> float:
    info = sync_redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _drain(
    worker: Worker, url: str, limit: int | None, profiler: cProfile.Profile | None = None, *, loop: bool = False
) -> dict[str, float]:
    """Drain about ``limit`` jobs (all when None); return jobs done, CPU seconds, wall seconds, Redis CPU seconds.

    With ``loop`` (and a ``limit``), by the worker's own job loop, stopped once that many are done."""
    processed_before = worker.processed
    redis_before = _redis_cpu(url)
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    if loop and limit is not None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker._consume(worker.queue, stop))
        while not task.done():
            if worker.processed - processed_before >= limit:
                stop.set()
            await asyncio.wait([task], timeout=0.005)
        await task
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


async def _measure(
    worker: Worker, services: Services, url: str, jobs: int, profiler: cProfile.Profile | None, loop: bool
) -> dict[str, float]:
    """Drain the ``jobs`` queued: two warm-up rounds, half as the worker runs, the rest phase by phase."""
    heap.settle()  # as ``fhir-gateway worker`` starts: the fill's objects are not the drain's to collect
    before = worker.processed
    for _ in range(2):  # warm-up rounds, not counted
        await worker.drain_round(worker.queue, [TENANT])
    # The first half as the worker runs (its CPU per job and rate), the rest with every phase timed: the
    # timers' own cost (a CPU-clock read on each side of each map and classify) shows as the difference.
    plain = await _drain(worker, url, (jobs - (worker.processed - before)) // 2, profiler, loop=loop)
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
    waiting = int(await services.redis.xlen(services.keys.inbound(TENANT)))
    row = {phase: clock.cpu[phase] * 1e6 / done for phase in PHASES}
    row["other"] = timed["cpu"] * 1e6 / done - sum(row.values())
    row["total"] = timed["cpu"] * 1e6 / done
    row["plain"] = plain["cpu"] * 1e6 / plain["done"]
    row["redis"] = plain["redis"] * 1e6 / plain["done"]
    row["per_s"] = plain["done"] / plain["wall"]
    row["cpu_per_s"] = plain["done"] / plain["cpu"]
    row["jobs"], row["plain_jobs"], row["timed"], row["dead"], row["left"] = jobs, plain["done"], done, dead, waiting
    return row


async def _run(
    url: str, prefix: str, size: int, count: int, batch: int, profile: Path | None, updates: bool, loop: bool
) -> dict[str, Any]:
    """Measure the creates, and the updates after them when ``updates``; return a row of figures per workload."""
    settings = Settings(redis_url=url, key_prefix=prefix, worker_concurrency=batch, worker_metrics_port=0)
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {TENANT: {"vendor": "generic"}}})
    services = Services.build(settings, clients)
    profiler = cProfile.Profile() if profile else None
    rows: dict[str, Any] = {}
    try:
        jobs, sent = await _fill(services, size, count)
        worker = services.worker("worker-phases")
        worker._tenants = [TENANT]
        await worker.queue.ensure_group(TENANT)
        rows["creates"] = await _measure(worker, services, url, jobs, None if updates else profiler, loop)
        if updates:
            feed = await services.redis.xrevrange(services.keys.feed(TENANT), count=1)
            jobs, due = await _fill_updates(services, sent)
            rows["updates"] = await _measure(worker, services, url, jobs, profiler, loop)
            rows["due"], rows["published"] = due, await _events_since(services, feed[0][0].decode())
        return rows
    finally:
        await services.aclose()
        if profiler and profile:
            profiler.dump_stats(str(profile))


def _print(name: str, row: dict[str, float]) -> None:
    print(f"{name}, as the worker runs ({row['plain_jobs']:,.0f} jobs): {row['plain']:.1f} us of worker CPU per job, "
          f"{row['cpu_per_s']:,.0f} jobs per CPU second, {row['per_s']:,.0f} jobs/s, "
          f"Redis {row['redis']:.1f} us per job")  # fmt: skip
    print()
    print(f"Phase by phase, us of worker CPU per job ({row['timed']:,.0f} jobs, with the timers' own cost):")
    print()
    print("| " + " | ".join(PHASES) + " | other | total |")
    print("|" + "--:|" * (len(PHASES) + 2))
    cells = " | ".join(f"{row[p]:.1f}" for p in (*PHASES, "other", "total"))
    print(f"| {cells} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100, help="entries per Bundle, one of them a Patient (100)")
    parser.add_argument("--bundles", type=int, default=200, help="Bundles accepted before the drain (200)")
    parser.add_argument("--batch", type=int, default=Settings.model_fields["worker_concurrency"].default,
                        help="jobs per read and batch (the gateway's GATEWAY_WORKER_CONCURRENCY default)")  # fmt: skip
    parser.add_argument("--embedded", action="store_true", help="use an embedded Redis even when REDIS_URL is set")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the first half to this file")
    parser.add_argument("--updates", action="store_true", help="then send every resource again changed, and drain")
    parser.add_argument(
        "--loop",
        action="store_true",
        help="drain the first half with the worker's own job loop (its next batch read and decided while the "
        "one before commits) instead of one round after another",
    )
    args = parser.parse_args(argv)
    prefix = f"gwworker-{uuid.uuid4().hex[:8]}"
    url = None if args.embedded else os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if url else EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            url = url or (embedded.url if embedded else "")
            rows = asyncio.run(
                _run(url, prefix, args.size, args.bundles, args.batch, args.profile, args.updates, args.loop)
            )
        finally:
            if embedded:
                embedded.stop()
            elif url:
                delete_keys(url, prefix)
    where = "embedded (appendfsync always)" if embedded else "REDIS_URL"
    ok = True
    for name in ("creates", "updates"):
        row = rows.get(name)
        if row is None:
            continue
        print(f"{name.capitalize()}: Redis {where}; {row['jobs']:,.0f} jobs queued from {args.bundles} "
              f"{args.size}-entry Bundles, batches of {args.batch}; dead-lettered {row['dead']:.0f}, "
              f"left {row['left']:.0f}")  # fmt: skip
        print()
        _print(name.capitalize(), row)
        ok = ok and row["dead"] == 0 and row["left"] == 0
    if args.updates:
        due, published = rows["due"], rows["published"]
        expected = Counter({event: n for event, n in due.items() if event != "none"})
        made = ", ".join(
            f"{event} {expected[event]:,} / {published[event]:,}" for event in sorted(expected | published)
        )
        print(f"Events the updates made (due / published): {made}; {due['none']:,} sent with no visible change")
        ok = ok and published == expected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
