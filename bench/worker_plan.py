"""Time ``RecordWriter.plan`` alone: the same batches planned again and again, never committed.

Accepts ``--bundles`` (10) ``--size``-entry (100) transaction Bundles as ``worker_phases.py`` does, reads their jobs
once in batches of ``--batch`` (128), and plans every batch ``--rounds`` (15) times, printing the best round's
worker CPU us per job (the round least disturbed by other processes on a shared machine). Then it applies the
creates, sends every resource again changed as ``worker_phases.py --updates`` does, and times the updates' plans
the same way. Records are mapped, classified, serialised and planned as the worker does; the job loop, the
metrics and the commit are left out. Keys go under a unique prefix and are deleted at the end.

    REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/worker_plan.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

import worker_phases as phases
from gateway_bench import delete_keys

from gateway import heap
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings


async def _batches(worker: Any, batch: int) -> list[Any]:
    found = []
    while got := await worker.queue.read([phases.TENANT], "plan-bench", batch, 10):
        found.append(got)
    return found


async def _best(worker: Any, batches: list[Any], rounds: int) -> float:
    heap.settle()
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for jobs in batches:
            await worker._records.plan(jobs)
        best = min(best, time.process_time() - started)
    return best * 1e6 / sum(len(jobs) for jobs in batches)


async def _run(url: str, size: int, count: int, batch: int, rounds: int) -> dict[str, float]:
    prefix = f"gwplan-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=url, key_prefix=prefix, worker_concurrency=batch, worker_metrics_port=0)
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {phases.TENANT: {"vendor": "generic"}}})
    services = Services.build(settings, clients)
    try:
        _, sent = await phases._fill(services, size, count)
        worker = services.worker("plan-bench")
        worker._tenants = [phases.TENANT]
        await worker.queue.ensure_group(phases.TENANT)
        batches = await _batches(worker, batch)
        creates = await _best(worker, batches, rounds)
        for jobs in batches:
            await worker.handle(*jobs)
        await phases._fill_updates(services, sent)
        updates = await _best(worker, await _batches(worker, batch), rounds)
        return {"creates": creates, "updates": updates}
    finally:
        await services.aclose()
        delete_keys(url, prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100, help="entries per Bundle (100)")
    parser.add_argument("--bundles", type=int, default=10, help="Bundles accepted (10)")
    parser.add_argument("--batch", type=int, default=128, help="jobs per batch (128)")
    parser.add_argument("--rounds", type=int, default=15, help="times every batch is planned (15); the best counts")
    args = parser.parse_args(argv)
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    figures = asyncio.run(_run(url, args.size, args.bundles, args.batch, args.rounds))
    print(f"RecordWriter.plan, best of {args.rounds} rounds, worker CPU us per job: "
          f"creates {figures['creates']:.1f}, updates {figures['updates']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
