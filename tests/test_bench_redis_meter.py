"""How the benchmark (``bench/gateway_bench.py``) meters its Redis: an AOF rewrite is Redis's work, counted in
Redis's CPU share rather than as another program disturbing the run, and it can be done before a timed window."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from redis import Redis

from gateway.embedded import EmbeddedRedis
from tests.support import RedisProcess, bench_script, free_port


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_script("gateway_bench")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Redis, Path]]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = Redis.from_url(server.url)
    try:
        yield client, tmp_path / "redis" / "appendonly.aof"
    finally:
        client.close()
        server.stop()


def _overwrite(client: Redis, keys: int, rounds: int) -> None:
    """Write the same keys again and again: the AOF grows with every write, the data does not."""
    for round_ in range(rounds):
        pipe = client.pipeline(transaction=False)
        for key in range(keys):
            pipe.set(f"k{key}", f"{round_}-{key}-" + "x" * 40)
        pipe.execute()


def test_the_aof_is_rewritten_before_a_window_and_the_rewrite_is_redis_cpu(
    bench: ModuleType, embedded: tuple[Redis, Path]
) -> None:
    client, aof = embedded
    _overwrite(client, keys=20_000, rounds=5)
    grown = aof.stat().st_size
    forks = bench.redis_forks(client)
    info = client.info("cpu")
    children_before = info["used_cpu_user_children"] + info["used_cpu_sys_children"]
    cpu_before = bench.redis_cpu_seconds(client)

    assert bench.compact_aof(client) > 0

    persistence = client.info("persistence")
    assert (persistence["aof_rewrite_in_progress"], persistence["aof_rewrite_scheduled"]) == (0, 0)
    assert bench.redis_forks(client) == forks + 1
    assert aof.stat().st_size < grown / 3  # one SET per key is left of five
    assert client.get("k7") == b"4-7-" + b"x" * 40  # nothing was lost by the rewrite
    info = client.info("cpu")
    child = info["used_cpu_user_children"] + info["used_cpu_sys_children"] - children_before
    assert child > 0
    # The child's CPU is Redis's, not "other programs" (the old meter read the server's own CPU only).
    assert bench.redis_cpu_seconds(client) - cpu_before >= child


def test_a_server_without_aof_is_not_rewritten(bench: ModuleType, tmp_path: Path) -> None:
    server = RedisProcess(free_port(), tmp_path)  # appendonly no
    client = Redis.from_url(server.url)
    try:
        forks = bench.redis_forks(client)
        assert bench.compact_aof(client) == 0
        assert bench.redis_forks(client) == forks
    finally:
        client.close()
        server.stop()


def test_only_the_benchmarks_own_redis_is_rewritten(bench: ModuleType, embedded: tuple[Redis, Path]) -> None:
    client, _ = embedded
    forks = bench.redis_forks(client)
    args = bench.parse_args(["--no-baseline"])
    assert args.compact_aof is False  # until main() finds that it started the Redis itself
    bench.prepare_redis(args, client, "a window")
    assert bench.redis_forks(client) == forks
    args.compact_aof = True
    bench.prepare_redis(args, client, "a window")
    assert bench.redis_forks(client) == forks + 1


def test_a_window_reads_the_slowest_redis_events_of_its_own_redis(
    bench: ModuleType, embedded: tuple[Redis, Path]
) -> None:
    client, _ = embedded
    bench.watch_latency(client)
    client.execute_command("DEBUG", "SLEEP", "0.3")  # before the window: forgotten by the reset
    bench.reset_latency(client)
    assert bench.latency_events(client) == {}
    client.execute_command("DEBUG", "SLEEP", "0.12")  # a command that held Redis for 120 ms, in the window
    client.set("quick", "1")

    events = bench.latency_events(client)

    assert 120 <= events["command"] < 300  # this window's stall, not the one before the reset
    assert list(events.values()) == sorted(events.values(), reverse=True)  # the slowest kind first
