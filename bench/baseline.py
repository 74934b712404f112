"""The fhir.resources-inline baseline that ``gateway_bench.py`` compares the gateway's acceptance with.

What an ingest written the obvious way costs: for each transaction Bundle (the JSON bytes the gateway was sent),
parse and validate the whole Bundle with fhir.resources' R4B models (``Bundle.model_validate_json``, through
``conformance.fhir_models``, the one module that imports fhir.resources), then XADD every entry's resource, as the
model exports it, onto one stream: one XADD per resource, pipelined per Bundle (one round trip per Bundle). No
reference rewriting, no digests, no idempotency, no version history: a floor for the work, not the same work.

It runs in the benchmark's own process, one Bundle after another (one process, one core at most), on the run's
Redis, onto a scratch stream under the run's key prefix that is deleted when it is done.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import redis

from conformance.fhir_models import model_class

__all__ = ["BaselineResult", "run_baseline"]


@dataclass
class BaselineResult:
    size: int
    bundles: int = 0
    resources: int = 0
    seconds: float = 0.0
    resources_per_s: float = 0.0
    cpu_ms_per_resource: float = 0.0  # the benchmark process's CPU: parse, export, redis-py
    cpu_pct: float = 0.0  # percent of one core over the window
    redis_cpu_pct: float = 0.0
    parse_ms_per_bundle: float = 0.0  # Bundle.model_validate_json alone, mean
    stream_length: int = 0  # entries on the scratch stream before it was deleted
    other_cpu_pct: float = 0.0  # other programs on the machine, set by the caller


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))


def _ingest(model: Any, client: redis.Redis, stream: str, body: bytes) -> tuple[int, float]:
    """Parse one Bundle with fhir.resources and XADD its resources in one pipeline; return (resources, parse s)."""
    started = time.perf_counter()
    bundle = model.model_validate_json(body)
    parsed = time.perf_counter() - started
    pipe = client.pipeline(transaction=False)
    count = 0
    for entry in bundle.entry or ():
        if entry.resource is None:
            continue
        pipe.xadd(stream, {"type": entry.resource.get_resource_type(), "body": entry.resource.model_dump_json()})
        count += 1
    pipe.execute()
    return count, parsed


def run_baseline(client: redis.Redis, stream: str, size: int, bodies: list[bytes], warmup: int = 2) -> BaselineResult:
    """Ingest ``bodies`` (``size``-entry transaction Bundles) the fhir.resources-inline way onto ``stream``.

    The first ``warmup`` Bundles are ingested untimed first (model imports and pydantic's first builds), then
    all of them are timed; the stream is deleted at the end.
    """
    model = model_class("Bundle")
    if model is None:
        raise RuntimeError("fhir.resources offers no R4B Bundle model")
    result = BaselineResult(size=size)
    try:
        for body in bodies[:warmup]:
            _ingest(model, client, stream, body)
        cpu0, redis0 = _cpu_seconds(), _redis_cpu_seconds(client)
        parse_seconds = 0.0
        started = time.perf_counter()
        for body in bodies:
            count, parsed = _ingest(model, client, stream, body)
            result.bundles += 1
            result.resources += count
            parse_seconds += parsed
        result.seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu0
        redis_cpu = _redis_cpu_seconds(client) - redis0
        result.stream_length = int(client.xlen(stream))
    finally:
        client.delete(stream)
    if result.seconds > 0:
        result.resources_per_s = result.resources / result.seconds
        result.cpu_pct = 100 * cpu / result.seconds
        result.redis_cpu_pct = 100 * redis_cpu / result.seconds
    if result.resources:
        result.cpu_ms_per_resource = 1000 * cpu / result.resources
    if result.bundles:
        result.parse_ms_per_bundle = 1000 * parse_seconds / result.bundles
    return result
